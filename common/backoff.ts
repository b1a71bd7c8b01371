/**
 * Exponential backoff for a retry: `minMs`·2^attempt (attempt 0 first), at most `maxMs`. With
 * `jitter`, a random delay between half of that and all of it ("equal jitter"), so that clients
 * that failed together do not all come back together.
 */
export function backoffMs(attempt: number, minMs: number, maxMs: number, jitter = false): number {
  const whole = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return jitter ? whole * (0.5 + Math.random() / 2) : whole;
}
