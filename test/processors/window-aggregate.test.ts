import { DDSketch } from '@datadog/sketches-js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  SKETCH_AFTER,
  sketchKeys,
  sketchQuantile,
  WindowAggregate,
} from '../../processors/windows/window-aggregate.js';

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

describe('WindowAggregate percentiles', () => {
  const sketchOf = (values: readonly number[]) => {
    const sketch = new DDSketch({ relativeAccuracy: 0.01 });
    for (const v of values) sketch.accept(v);
    return sketch;
  };
  const value = fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e9, max: 1e9 }),
    fc.integer({ min: -50, max: 50 }),
    fc.constantFrom(0, -0, 1e-320, -1e-320, 5e-324),
  );

  it('are those of a DDSketch of every reading, below and above the point where it keeps a sketch', () => {
    fc.assert(
      fc.property(fc.array(value, { minLength: 1, maxLength: 3 * SKETCH_AFTER }), (values) => {
        const agg = new WindowAggregate();
        const sketch = new DDSketch({ relativeAccuracy: 0.01 });
        for (const [i, v] of values.entries()) {
          agg.add(v, i);
          sketch.accept(v);
          // Every emission of a window, at any count, agrees with the sketch.
          if (i % 7 === 0 || i === values.length - 1) {
            const r = agg.values();
            expect([r.p50, r.p95, r.p99]).toEqual([0.5, 0.95, 0.99].map((q) => sketch.getValueAtQuantile(q)));
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('compute from kept values exactly what the sketch would, for each quantile', () => {
    fc.assert(
      fc.property(
        fc.array(value, { minLength: 1, maxLength: 40 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (values, q) => {
          expect(sketchQuantile(sketchKeys(values), q)).toBe(sketchOf(values).getValueAtQuantile(q));
        },
      ),
      { numRuns: 1_000 },
    );
  });
});
