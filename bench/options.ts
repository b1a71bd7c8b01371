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
