import { missingUnit, parseDuration } from '../common/duration.js';

/**
 * A numeric command-line option of a bench, checked: out of range, not a number, or not an integer
 * when one is expected, it stops the bench with a one-line message (exit 2) before anything starts.
 */
export function numberOption(name: string, raw: string, min: number, max: number, integer = true): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    console.error(
      `--${name}: expected ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got '${raw}'`,
    );
    process.exit(2);
  }
  return n;
}

/** A duration option of a bench (`5s`, `500ms`), above 0, checked the same way. */
export function durationOption(name: string, raw: string): number {
  const ms = parseDuration(raw);
  if (ms === undefined || ms <= 0) {
    console.error(`--${name}: ${missingUnit(raw) ?? 'expected a duration like 5s or 500ms'}, got '${raw}'`);
    process.exit(2);
  }
  return ms;
}

/**
 * A comma-separated list option of a bench (`--targets pipeline,listener`), each item one of
 * `allowed`, checked the same way; returned in `allowed`'s order, each once.
 */
export function listOption<T extends string>(name: string, raw: string, allowed: readonly T[]): T[] {
  const items = raw.split(',').map((item) => item.trim());
  if (items.some((item) => !allowed.includes(item as T))) {
    console.error(`--${name}: a comma-separated list of ${allowed.join(', ')}, got '${raw}'`);
    process.exit(2);
  }
  return allowed.filter((item) => items.includes(item));
}
