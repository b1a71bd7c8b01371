import { DDSketch } from '@datadog/sketches-js';
import type { AggregateField } from '../../contract/measurements.js';

/**
 * The running aggregate of one metric of one device in one window.
 *
 * count, sum, min, max and last are exact; mean and stddev come from Welford's update, which stays
 * accurate where sum-of-squares would cancel; p50/p95/p99 come from a DDSketch with 1 % relative
 * accuracy. Sketches are never merged: sketches-js 2.1 drops negative values when merging, and
 * every window here sees its readings one by one anyway.
 *
 * Most windows hold a few readings (a 10 s window of a device reporting every 2 s holds 5), and a
 * DDSketch costs two growing stores per window. So the first SKETCH_AFTER values are kept as they
 * are and the percentiles computed from them exactly as the sketch computes them (the same key
 * mapping, the same rank rule: `sketchQuantile`); only a window with more readings gets a sketch,
 * fed the kept values first. Either way the percentiles are those of a DDSketch of every reading,
 * which keeps memory bounded whatever the reading rate.
 */
const SKETCH_RELATIVE_ACCURACY = 0.01;
/** Values kept as they are before a window switches to a sketch (8 bytes each). */
export const SKETCH_AFTER = 64;
/** The key mapping every sketch of that accuracy uses (a LogarithmicMapping). */
const MAPPING = new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY }).mapping;

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
  /** The values, until there are more than SKETCH_AFTER; then the sketch. */
  private kept: number[] | undefined = [];
  private sketch: DDSketch | undefined;

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
    if (this.kept === undefined) this.sketch!.accept(value);
    else if (this.kept.push(value) > SKETCH_AFTER) {
      this.sketch = new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY });
      for (const v of this.kept) this.sketch.accept(v);
      this.kept = undefined;
    }
  }

  get size(): number {
    return this.count;
  }

  values(): AggregateValues {
    let p50: number;
    let p95: number;
    let p99: number;
    if (this.kept === undefined) {
      p50 = this.sketch!.getValueAtQuantile(0.5);
      p95 = this.sketch!.getValueAtQuantile(0.95);
      p99 = this.sketch!.getValueAtQuantile(0.99);
    } else {
      const keys = sketchKeys(this.kept);
      p50 = sketchQuantile(keys, 0.5);
      p95 = sketchQuantile(keys, 0.95);
      p99 = sketchQuantile(keys, 0.99);
    }
    return {
      count: this.count,
      sum: this.sum,
      min: this.min,
      max: this.max,
      mean: this.sum / this.count,
      last: this.last,
      // Sample standard deviation, as InfluxQL's STDDEV() computes it; 0 for a single reading.
      stddev: this.count > 1 ? Math.sqrt(this.m2 / (this.count - 1)) : 0,
      p50,
      p95,
      p99,
    };
  }
}

/** Values as a DDSketch files them: keys of the negative and positive ones, ascending, and zeros. */
interface SketchKeys {
  negative: number[];
  zeros: number;
  positive: number[];
  count: number;
}

export function sketchKeys(values: readonly number[]): SketchKeys {
  const negative: number[] = [];
  const positive: number[] = [];
  let zeros = 0;
  const min = MAPPING.minPossible;
  for (const v of values) {
    if (v > min) positive.push(MAPPING.key(v));
    else if (v < -min) negative.push(MAPPING.key(-v));
    else zeros++;
  }
  negative.sort(ascending);
  positive.sort(ascending);
  return { negative, zeros, positive, count: values.length };
}

const ascending = (a: number, b: number) => a - b;

/**
 * DDSketch.getValueAtQuantile over the same values (sketches-js 2.1, dense stores): the rank is
 * q × (count − 1); a dense store's keyAtRank(r) is the key of the ⌊r⌋-th value in ascending key
 * order, and the negative store is read from its top with keyAtRank(r, false), the ⌈r⌉-th.
 */
export function sketchQuantile(k: SketchKeys, q: number): number {
  if (k.count === 0) return Number.NaN;
  const rank = q * (k.count - 1);
  const neg = k.negative.length;
  if (rank < neg) return -MAPPING.value(k.negative[Math.ceil(neg - rank - 1)]!);
  if (rank < k.zeros + neg) return 0;
  return MAPPING.value(k.positive[Math.floor(rank - k.zeros - neg)]!);
}
