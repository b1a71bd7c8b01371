import { describe, expect, it } from 'vitest';
import { type ConfigError, loadConfig } from '../../common/config.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { VerifyBusyError } from '../../gateway/errors.js';
import { AuthFailureLimiter, sourceKey } from '../../gateway/limits/auth-failures.js';
import { TokenBuckets } from '../../gateway/limits/token-buckets.js';
import { VerifyQueue } from '../../gateway/limits/verify-queue.js';

/** A clock the test moves by hand. */
const clock = () => {
  let now = 1_000;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
};

describe('TokenBuckets', () => {
  it('lets a burst through, then makes each publish wait its turn, and cuts off a whole burst of debt', () => {
    const t = clock();
    const buckets = new TokenBuckets(10, 5, t.now);
    expect(Array.from({ length: 5 }, () => buckets.take('d'))).toEqual([0, 0, 0, 0, 0]);
    // In debt: 1, 2, … tokens short at 10 a second.
    expect(Array.from({ length: 5 }, () => buckets.take('d'))).toEqual([100, 200, 300, 400, 500]);
    expect(buckets.take('d')).toBeUndefined();
    expect(buckets.take('other')).toBe(0);
    t.advance(1_000); // 10 tokens back: out of debt, 5 saved again
    expect(buckets.take('d')).toBe(0);
  });

  it('takes a cost in tokens (bytes), waiting in proportion and cutting off past a burst of debt', () => {
    const t = clock();
    const bytes = new TokenBuckets(1_000, 4_000, t.now);
    expect(bytes.take('d', 4_000)).toBe(0);
    expect(bytes.take('d', 500)).toBe(500);
    expect(bytes.take('d', 3_600)).toBeUndefined();
    // A refused take costs nothing: the debt stays what it was.
    expect(bytes.take('d', 3_500)).toBe(4_000);
  });

  it('forgets only buckets that have refilled', () => {
    const t = clock();
    const buckets = new TokenBuckets(10, 5, t.now);
    buckets.take('a');
    for (let i = 0; i < 5; i++) buckets.take('b');
    t.advance(100);
    buckets.sweep();
    expect(buckets.size).toBe(1);
    t.advance(1_000);
    buckets.sweep();
    expect(buckets.size).toBe(0);
  });
});

describe('AuthFailureLimiter', () => {
  it('blocks a source after perMinute failures, for at least one drain interval, and lets it drain', () => {
    const t = clock();
    const limiter = new AuthFailureLimiter(6, 100, t.now); // drains one every 10 s
    for (let i = 0; i < 5; i++) expect(limiter.failed('1.2.3.4')).toBe(false);
    expect(limiter.blocked('1.2.3.4')).toBe(false);
    expect(limiter.failed('1.2.3.4')).toBe(true);
    expect(limiter.blocked('1.2.3.4')).toBe(true);
    expect(limiter.blocked('5.6.7.8')).toBe(false);
    expect(limiter.blockedCount()).toBe(1);
    t.advance(9_000);
    expect(limiter.blocked('1.2.3.4')).toBe(true);
    t.advance(1_500);
    expect(limiter.blocked('1.2.3.4')).toBe(false);
    // One more failure blocks it again, and that is not reported as a new block twice.
    expect(limiter.failed('1.2.3.4')).toBe(true);
    expect(limiter.failed('1.2.3.4')).toBe(false);
    t.advance(120_000);
    limiter.sweep();
    expect(limiter.blockedCount()).toBe(0);
  });

  it('remembers a bounded number of sources', () => {
    const limiter = new AuthFailureLimiter(1, 3, clock().now);
    for (const s of ['a', 'b', 'c', 'd']) limiter.failed(s);
    expect(limiter.blocked('a')).toBe(false);
    expect(limiter.blocked('d')).toBe(true);
  });

  it('keys IPv4 by address (also IPv4-mapped) and IPv6 by its /64', () => {
    expect(sourceKey('10.0.0.1')).toBe('10.0.0.1');
    expect(sourceKey('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(sourceKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:0db8:0001:0002:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceKey('::1')).toBe('0:0:0:0::/64');
    expect(sourceKey(undefined)).toBe('unknown');
  });
});

describe('VerifyQueue', () => {
  it('runs `concurrency` at once, queues `maxQueued`, refuses the rest at once', async () => {
    const queue = new VerifyQueue(2, 1);
    let running = 0;
    let peak = 0;
    const releases: (() => void)[] = [];
    const task = () =>
      queue.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((r) => releases.push(r));
        running--;
        return 'ok';
      });
    const runs = [task(), task(), task()];
    await expect(task()).rejects.toBeInstanceOf(VerifyBusyError);
    expect(queue.queued).toBe(1);
    const settle = () => new Promise((r) => setImmediate(r));
    await settle();
    expect(releases).toHaveLength(2);
    releases.shift()!(); // the first finishes: its slot goes to the queued one
    await settle();
    expect(releases).toHaveLength(2);
    expect(queue.queued).toBe(0);
    for (const r of releases.splice(0)) r();
    expect(await Promise.all(runs)).toEqual(['ok', 'ok', 'ok']);
    expect(peak).toBe(2);
    expect(queue.queued).toBe(0);
  });
});

describe('limit settings', () => {
  it('have the documented defaults, take 0 as off where that is offered, and refuse nonsense', () => {
    expect(loadConfig(GatewayConfigSchema, {})).toMatchObject({
      AUTH_FAILURES_PER_MINUTE: 30,
      AUTH_VERIFY_CONCURRENCY: 2,
      AUTH_VERIFY_QUEUE: 256,
      DEVICE_MAX_MSGS_PER_SEC: 100,
      DEVICE_MSGS_BURST: 200,
      MAX_IN_FLIGHT_PER_CLIENT: 100,
      MAX_SUBSCRIPTIONS_PER_CLIENT: 100,
    });
    expect(
      loadConfig(GatewayConfigSchema, { AUTH_FAILURES_PER_MINUTE: '0', DEVICE_MAX_MSGS_PER_SEC: '0' }),
    ).toMatchObject({ AUTH_FAILURES_PER_MINUTE: 0, DEVICE_MAX_MSGS_PER_SEC: 0 });
    const bad = {
      AUTH_FAILURES_PER_MINUTE: '-1',
      AUTH_VERIFY_CONCURRENCY: '0',
      DEVICE_MSGS_BURST: '0',
      MAX_IN_FLIGHT_PER_CLIENT: 'many',
      MAX_SUBSCRIPTIONS_PER_CLIENT: '0',
    };
    try {
      loadConfig(GatewayConfigSchema, bad);
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).problems.map((p) => p.split(':')[0]).sort()).toEqual(
        Object.keys(bad).sort(),
      );
    }
  });
});
