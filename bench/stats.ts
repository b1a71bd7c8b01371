/** Figures the benchmarks report: quantiles of latencies, medians of rounds. */

/** The q-quantile of values sorted ascending (nearest rank, no interpolation); NaN when empty. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Median of the values that are not NaN (a round without a figure does not count); NaN when none. */
export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A load round's figures: PUBACKs a second in its window, and publish → PUBACK p50, p99 and max (ms). */
export function roundFigures(r: { latenciesMs: Float64Array; ackedInWindow: number; seconds: number }): {
  rate: number;
  p50: number;
  p99: number;
  max: number;
} {
  const sorted = r.latenciesMs.slice().sort();
  return {
    rate: r.ackedInWindow / r.seconds,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
  };
}
