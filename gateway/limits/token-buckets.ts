/**
 * Token buckets by key (a device id): `ratePerSec` tokens a second, at most `burst` saved up. A
 * take beyond the saved tokens is granted a wait instead of a refusal, as a debt of at most `burst`
 * more tokens: a device slightly over its rate is slowed down, one far over it has to be cut off.
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

  /** Takes one token: the milliseconds to wait before going ahead (0: at once), or undefined when the debt is full. */
  take(key: string): number | undefined {
    const now = this.now();
    const bucket = this.buckets.get(key);
    if (bucket === undefined) {
      this.buckets.set(key, { tokens: this.burst - 1, atMs: now });
      return 0;
    }
    bucket.tokens = this.refilled(bucket, now);
    bucket.atMs = now;
    if (bucket.tokens - 1 < -this.burst) return undefined;
    bucket.tokens -= 1;
    return bucket.tokens >= 0 ? 0 : (-bucket.tokens * 1000) / this.ratePerSec;
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
