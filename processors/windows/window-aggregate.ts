import { DDSketch } from '@datadog/sketches-js';
import type { AggregateField } from '../../contract/measurements.js';

/**
 * The running aggregate of one metric of one device in one window.
 *
 * count, sum, min, max and last are exact; mean and stddev come from Welford's update, which stays
 * accurate where sum-of-squares would cancel; p50/p95/p99 come from a DDSketch with 1 % relative
 * accuracy. Sketches are never merged: sketches-js 2.1 drops negative values when merging, and
 * every window here sees its readings one by one anyway.
 */
const SKETCH_RELATIVE_ACCURACY = 0.01;

export type AggregateValues = Record<AggregateField, number>;

export class WindowAggregate {
  private count = 0;
  private sum = 0;
  private min = Number.POSITIVE_INFINITY;
  private max = Number.NEGATIVE_INFINITY;
  private mean = 0;
  private m2 = 0;
  private last = 0;
  private lastTs = Number.NEGATIVE_INFINITY;
  private readonly sketch = new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY });

  add(value: number, tsMs: number): void {
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
    const delta = value - this.mean;
    this.mean += delta / this.count;
    this.m2 += delta * (value - this.mean);
    // `last` is the latest in event time; a late reading does not replace a newer one.
    if (tsMs >= this.lastTs) {
      this.last = value;
      this.lastTs = tsMs;
    }
    this.sketch.accept(value);
  }

  get size(): number {
    return this.count;
  }

  values(): AggregateValues {
    return {
      count: this.count,
      sum: this.sum,
      min: this.min,
      max: this.max,
      mean: this.sum / this.count,
      last: this.last,
      // Sample standard deviation, as InfluxQL's STDDEV() computes it; 0 for a single reading.
      stddev: this.count > 1 ? Math.sqrt(this.m2 / (this.count - 1)) : 0,
      p50: this.sketch.getValueAtQuantile(0.5),
      p95: this.sketch.getValueAtQuantile(0.95),
      p99: this.sketch.getValueAtQuantile(0.99),
    };
  }
}
