/**
 * Durations as people write them in config, on command lines and in rules files: `250ms`, `10s`,
 * `1m`, `2h`, `1d`. A number needs its unit: `20` could mean 20 ms or 20 s depending on who reads
 * it, so it is refused (with "add a unit: 20s") everywhere durations are parsed; only `0` stands
 * alone. Returns undefined for anything else so the caller can report it in context
 * (`missingUnit` says when the unit is what is missing).
 */
const UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/;

export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text);
  if (!match) return undefined;
  const unit = match[2];
  if (unit === undefined) return Number(match[1]) === 0 ? 0 : undefined;
  const ms = Number(match[1]) * UNITS_MS[unit]!;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** `add a unit: 20s` when `text` is a number other than 0 without its unit; else undefined. */
export function missingUnit(text: string): string | undefined {
  const match = DURATION.exec(text);
  return match && match[2] === undefined && Number(match[1]) !== 0 ? `add a unit: ${match[1]}s` : undefined;
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
