/**
 * Durations as people write them in config: `250ms`, `10s`, `1m`, `2h`, `1d`. A bare number is
 * milliseconds. Returns undefined for anything else so the caller can report it in context.
 */
const UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) return undefined;
  const ms = Number(match[1]) * UNITS_MS[match[2] ?? 'ms']!;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

const FORMAT_UNITS = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
] as const;

/** The shortest spelling of a duration, used as the `window` tag (`10s`, `1m`, `1h`). */
export function formatDuration(ms: number): string {
  // Called for every window emission: the unit table is not rebuilt each time.
  for (const [unit, size] of FORMAT_UNITS) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
