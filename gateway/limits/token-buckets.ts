/**
 * Token buckets by key (a device id): `ratePerSec` tokens a second, at most `burst` saved up. A
 * take beyond the saved tokens is granted a wait instead of a refusal, as a debt of at most `burst`
 * more tokens: a device slightly over its rate is slowed down, one far over it has to be cut off.
 * Tokens are publishes, or bytes (a take then costs the payload's size).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  /**
   * Takes `cost` tokens: the milliseconds to wait before going ahead (0: at once), or undefined when
   * the debt would pass `burst`.
   */
  take(key: string, cost = 1): number | undefined {
    const bucket = this.current(key);
    if (bucket.tokens - cost < -this.burst) return undefined;
    bucket.tokens -= cost;
    return bucket.tokens >= 0 ? 0 : (-bucket.tokens * 1000) / this.ratePerSec;
  }

  /** Takes `cost` tokens only if they are there now: no wait, no debt. */
  tryTake(key: string, cost = 1): boolean {
    const bucket = this.current(key);
    if (bucket.tokens < cost) return false;
    bucket.tokens -= cost;
    return true;
  }

  /** The key's bucket, refilled up to now (a new one starts full). */
  private current(key: string): { tokens: number; atMs: number } {
    const now = this.now();
    const bucket = this.buckets.get(key);
    if (bucket === undefined) {
      const fresh = { tokens: this.burst, atMs: now };
      this.buckets.set(key, fresh);
      return fresh;
    }
    bucket.tokens = this.refilled(bucket, now);
    bucket.atMs = now;
    return bucket;
  }

  /** Forgets full buckets: a new one starts full, so they hold nothing worth keeping. */
  sweep(): void {
    const now = this.now();
    for (const [key, bucket] of this.buckets) {
      if (this.refilled(bucket, now) >= this.burst) this.buckets.delete(key);
    }
  }

  private refilled(bucket: { tokens: number; atMs: number }, now: number): number {
    return Math.min(this.burst, bucket.tokens + ((now - bucket.atMs) * this.ratePerSec) / 1000);
  }
}
