import { isIPv6 } from 'node:net';

/**
 * Failed authentications per source address, as a leaky bucket: each failure adds one, the level
 * drains at `perMinute` a minute, and a source whose next failure would overflow `perMinute` is
 * blocked until it has drained, and for at least one drain interval (60 s / perMinute), so that a
 * block does not flicker off a millisecond after it was reached. Only failures count, so any number of devices behind one NAT
 * address connect freely as long as few of them get their secret wrong.
 */
export class AuthFailureLimiter {
  private readonly sources = new Map<string, { level: number; atMs: number; blockedUntilMs: number }>();
  private readonly drainPerMs: number;
  private readonly minBlockMs: number;

  constructor(
    private readonly perMinute: number,
    /** Past this many remembered sources the oldest are forgotten: memory stays bounded under a spray. */
    private readonly maxSources = 100_000,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.drainPerMs = perMinute / 60_000;
    this.minBlockMs = 60_000 / perMinute;
  }

  /** True when CONNECTs from this source are refused without checking their credentials. */
  blocked(source: string): boolean {
    const entry = this.sources.get(source);
    return entry !== undefined && this.isBlocked(entry, this.now());
  }

  /** Records a failure; true when it is the one that blocks the source. */
  failed(source: string): boolean {
    const now = this.now();
    const entry = this.sources.get(source);
    const wasBlocked = entry !== undefined && this.isBlocked(entry, now);
    const level = (entry === undefined ? 0 : this.level(entry, now)) + 1;
    const blocks = level + 1 > this.perMinute;
    const blockedUntilMs = blocks ? now + this.minBlockMs : (entry?.blockedUntilMs ?? 0);
    // Re-inserted so that the map's order is least recently failed first, which eviction relies on.
    this.sources.delete(source);
    if (this.sources.size >= this.maxSources) this.sources.delete(this.sources.keys().next().value!);
    this.sources.set(source, { level, atMs: now, blockedUntilMs });
    return blocks && !wasBlocked;
  }

  /** Sources blocked right now. */
  blockedCount(): number {
    const now = this.now();
    let n = 0;
    for (const entry of this.sources.values()) if (this.isBlocked(entry, now)) n++;
    return n;
  }

  /** Forgets sources that have drained. */
  sweep(): void {
    const now = this.now();
    for (const [source, entry] of this.sources) {
      if (this.level(entry, now) <= 0 && !this.isBlocked(entry, now)) this.sources.delete(source);
    }
  }

  private isBlocked(entry: { level: number; atMs: number; blockedUntilMs: number }, now: number): boolean {
    return now < entry.blockedUntilMs || this.level(entry, now) + 1 > this.perMinute;
  }

  private level(entry: { level: number; atMs: number }, now: number): number {
    return Math.max(0, entry.level - (now - entry.atMs) * this.drainPerMs);
  }
}

/**
 * The key a source is limited by: an IPv4 address (also when IPv4-mapped), or the /64 prefix of an
 * IPv6 address, since one IPv6 host usually has a whole /64 to pick addresses from.
 */
export function sourceKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.split('%')[0]!.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::')
    ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
