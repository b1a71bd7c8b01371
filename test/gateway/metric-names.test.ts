import { describe, expect, it } from 'vitest';
import { MetricNames } from '../../gateway/limits/metric-names.js';

/** A reading's metrics, by name. */
const n = (...names: string[]) => names.map((name) => ({ name }));

function names(perDevice: number, perTenant: number) {
  let now = 0;
  const m = new MetricNames({ perDevice, perTenant, ttlMs: 60_000, now: () => now });
  return { m, advance: (ms: number) => (now += ms) };
}

describe('MetricNames', () => {
  it('admits a device’s names up to its limit, and always the ones it already uses', () => {
    const { m } = names(3, 100);
    expect(m.admit('t', 'd', n('a', 'b'))).toBeUndefined();
    expect(m.admit('t', 'd', n('c'))).toBeUndefined();
    expect(m.admit('t', 'd', n('d'))).toBe('device');
    expect(m.admit('t', 'd', n('a', 'b', 'c'))).toBeUndefined();
    // Another device has a limit of its own.
    expect(m.admit('t', 'e', n('d', 'e', 'f'))).toBeUndefined();
  });

  it('refuses a reading whole: none of its names is admitted when one is over', () => {
    const { m } = names(2, 100);
    expect(m.admit('t', 'd', n('a', 'b', 'c'))).toBe('device');
    expect(m.admit('t', 'd', n('a', 'b'))).toBeUndefined();
  });

  it('bounds the names of a tenant across its devices, not other tenants', () => {
    const { m } = names(10, 4);
    expect(m.admit('t', 'd1', n('a', 'b', 'c'))).toBeUndefined();
    expect(m.admit('t', 'd2', n('a', 'b', 'c', 'd'))).toBeUndefined();
    expect(m.admit('t', 'd3', n('e'))).toBe('tenant');
    expect(m.admit('t', 'd3', n('a'))).toBeUndefined();
    expect(m.admit('u', 'd1', n('e', 'f', 'g', 'h'))).toBeUndefined();
  });

  it('forgets devices silent past the TTL, and the tenant names only they used', () => {
    const { m, advance } = names(2, 3);
    m.admit('t', 'old', n('a', 'b'));
    advance(30_000);
    m.admit('t', 'live', n('a'));
    advance(40_000);
    m.sweep();
    expect(m.size).toBe(1);
    // 'b' was only the old device's: the tenant has room again; 'a' is still used.
    expect(m.admit('t', 'new', n('c', 'd'))).toBeUndefined();
    expect(m.admit('t', 'other', n('e'))).toBe('tenant');
  });
});
