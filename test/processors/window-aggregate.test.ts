import { describe, expect, it } from 'vitest';
import { WindowAggregate } from '../../processors/windows/window-aggregate.js';

describe('WindowAggregate', () => {
  it('computes count, sum, min, max, mean, last and sample stddev exactly', () => {
    const agg = new WindowAggregate();
    const values = [2, 4, 4, 4, 5, 5, 7, 9];
    for (const [i, v] of values.entries()) agg.add(v, 1000 + i);
    const r = agg.values();
    expect(r).toMatchObject({ count: 8, sum: 40, min: 2, max: 9, mean: 5, last: 9 });
    expect(r.stddev).toBeCloseTo(Math.sqrt(32 / 7), 12);
  });

  it('takes `last` by event time, not by arrival', () => {
    const agg = new WindowAggregate();
    agg.add(1, 2000);
    agg.add(2, 1000); // arrives later, happened earlier
    expect(agg.values().last).toBe(1);
  });

  it('gives 0 stddev for a single reading and handles negative values', () => {
    const agg = new WindowAggregate();
    agg.add(-40, 1);
    expect(agg.values()).toMatchObject({ count: 1, min: -40, max: -40, stddev: 0, mean: -40 });
    expect(agg.values().p50).toBeCloseTo(-40, 0);
  });

  it('estimates percentiles within 1 % relative accuracy', () => {
    const agg = new WindowAggregate();
    for (let i = 1; i <= 1000; i++) agg.add(i, i);
    const r = agg.values();
    for (const [q, exact] of [
      [r.p50, 500],
      [r.p95, 950],
      [r.p99, 990],
    ] as const) {
      expect(Math.abs(q - exact) / exact).toBeLessThan(0.02);
    }
  });
});
