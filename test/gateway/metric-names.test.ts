import { describe, expect, it } from 'vitest';
import { MetricNames } from '../../gateway/limits/metric-names.js';

function names(perDevice: number, perTenant: number) {
  let now = 0;
  const m = new MetricNames({ perDevice, perTenant, ttlMs: 60_000, now: () => now });
  return { m, advance: (ms: number) => (now += ms) };
}

describe('MetricNames', () => {
  it('admits a device’s names up to its limit, and always the ones it already uses', () => {
    const { m } = names(3, 100);
    expect(m.admit('t', 'd', ['a', 'b'])).toBeUndefined();
    expect(m.admit('t', 'd', ['c'])).toBeUndefined();
    expect(m.admit('t', 'd', ['d'])).toBe('device');
    expect(m.admit('t', 'd', ['a', 'b', 'c'])).toBeUndefined();
    // Another device has a limit of its own.
    expect(m.admit('t', 'e', ['d', 'e', 'f'])).toBeUndefined();
  });

  it('refuses a reading whole: none of its names is admitted when one is over', () => {
    const { m } = names(2, 100);
    expect(m.admit('t', 'd', ['a', 'b', 'c'])).toBe('device');
    expect(m.admit('t', 'd', ['a', 'b'])).toBeUndefined();
  });

  it('bounds the names of a tenant across its devices, not other tenants', () => {
    const { m } = names(10, 4);
    expect(m.admit('t', 'd1', ['a', 'b', 'c'])).toBeUndefined();
    expect(m.admit('t', 'd2', ['a', 'b', 'c', 'd'])).toBeUndefined();
    expect(m.admit('t', 'd3', ['e'])).toBe('tenant');
    expect(m.admit('t', 'd3', ['a'])).toBeUndefined();
    expect(m.admit('u', 'd1', ['e', 'f', 'g', 'h'])).toBeUndefined();
  });

  it('forgets devices silent past the TTL, and the tenant names only they used', () => {
    const { m, advance } = names(2, 3);
    m.admit('t', 'old', ['a', 'b']);
    advance(30_000);
    m.admit('t', 'live', ['a']);
    advance(40_000);
    m.sweep();
    expect(m.size).toBe(1);
    // 'b' was only the old device's: the tenant has room again; 'a' is still used.
    expect(m.admit('t', 'new', ['c', 'd'])).toBeUndefined();
    expect(m.admit('t', 'other', ['e'])).toBe('tenant');
  });
});
