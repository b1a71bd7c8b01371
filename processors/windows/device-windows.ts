import { DEFAULT_WINDOW_MAX_METRICS } from '../config.js';
import { type AggregateValues, WindowAggregate } from './window-aggregate.js';

/**
 * Event-time tumbling windows of one device, for several window sizes at once.
 *
 * Lifecycle of a window [start, end):
 * - open: readings with start ≤ ts < end are added.
 * - on time: once the device's event time reaches `end`, the window is emitted (real time).
 * - corrections: until the watermark (max event time − allowed lateness) passes `end`, a late
 *   reading still lands in the window and the corrected window is emitted again, with the same
 *   series and time, so InfluxDB overwrites the earlier result.
 * - final: once the watermark passes `end`, the window is emitted a last time if it changed and
 *   its state is dropped. A reading whose window ends at or before the watermark is counted as
 *   late and not aggregated (the raw measurement still has it): a final window is never reopened.
 * The watermark only moves forward. A device that goes quiet does not stop its clock: after
 * `idleTimeoutMs` of wall time without a reading, its event time is taken to have moved on by the
 * wall time elapsed, so its last windows become final.
 *
 * Windows are aligned to the epoch and each size is a multiple of the smaller ones, so a window
 * always lies inside one window of every larger size. That nesting is what makes replays exact
 * (see PartitionWindows).
 *
 * A window aggregates at most `maxMetrics` distinct metrics (WINDOW_MAX_METRICS): the first ones to
 * arrive in it. A further metric is counted (`metricsRefused`), not aggregated; the raw measurement
 * still has it. Being decided per window, in the order of the readings, the choice is the same when
 * a window is rebuilt from a replay.
 */
export interface WindowSettings {
  /** Ascending; each a multiple of the previous. */
  sizesMs: readonly number[];
  allowedLatenessMs: number;
  idleTimeoutMs: number;
  /** WINDOW_MAX_METRICS; DEFAULT_WINDOW_MAX_METRICS when left out. */
  maxMetrics?: number;
}

export interface WindowResult {
  tenant: string;
  deviceId: string;
  metric: string;
  windowMs: number;
  startMs: number;
  values: AggregateValues;
  /** True for the last emission of this window. */
  final: boolean;
  /** The device's labels as of its latest reading (fleet rollups group by them). */
  labels?: Readonly<Record<string, string>>;
}

export interface ReadingInput {
  id: string;
  tsMs: number;
  metrics: Readonly<Record<string, { value: number }>>;
  labels?: Readonly<Record<string, string>>;
}

export interface AddOutcome {
  /** Window sizes for which the reading came too late and was not aggregated. */
  lateFor: readonly number[];
  /** The reading's id was already aggregated into its open windows. */
  duplicate: boolean;
  /** Metrics of the reading left out of at least one window that already held maxMetrics others. */
  metricsRefused: number;
}

/** Metrics a window looks up by scanning its names; past this many it keeps a map as well. */
const SCAN_METRICS = 8;

interface OpenWindow {
  startMs: number;
  endMs: number;
  /** Metric names in order of arrival, and their aggregates at the same index. */
  names: string[];
  aggregates: WindowAggregate[];
  /** Name → index, once the window holds more than SCAN_METRICS metrics. */
  index: Map<string, number> | undefined;
  /** Stream sequence of the first reading in it: nothing from here on may be acknowledged yet. */
  firstSeq: number;
  emitted: boolean;
  dirty: boolean;
}

/** The outcome of most readings, shared: add() allocates nothing for a reading on time. */
const ON_TIME: AddOutcome = Object.freeze({
  lateFor: Object.freeze([]),
  duplicate: false,
  metricsRefused: 0,
});
const DUPLICATE: AddOutcome = Object.freeze({
  lateFor: Object.freeze([]),
  duplicate: true,
  metricsRefused: 0,
});

export class DeviceWindows {
  /** Per size: start → window. Few entries: the open window plus those still taking corrections. */
  private readonly open: Map<number, OpenWindow>[];
  /** Every window ending at or before this is final. Saved with checkpoints. */
  watermark: number;
  private maxTs = Number.NEGATIVE_INFINITY;
  /** Wall time of the latest reading: how long the device has been silent. */
  lastWallMs = 0;
  /** Highest stream sequence added: a replay from below it needs this device's exact watermark. */
  lastSeq = 0;
  private readonly maxMetrics: number;
  /** Ids aggregated into the open windows of the largest size, to drop redelivered readings. */
  private readonly seenIds = new Map<number, Set<string>>();
  private labels: Readonly<Record<string, string>> | undefined;
  /** Per size, the window the latest reading went to: the next one usually goes there too. */
  private readonly current: (OpenWindow | undefined)[];

  constructor(
    readonly tenant: string,
    readonly deviceId: string,
    private readonly settings: WindowSettings,
    restoredWatermark = Number.NEGATIVE_INFINITY,
  ) {
    this.open = settings.sizesMs.map(() => new Map());
    this.current = settings.sizesMs.map(() => undefined);
    this.watermark = restoredWatermark;
    this.maxMetrics = settings.maxMetrics ?? DEFAULT_WINDOW_MAX_METRICS;
  }

  /** Lowest stream sequence still needed by an open window, or undefined when none is open. */
  get firstOpenSeq(): number | undefined {
    let first: number | undefined;
    for (const windows of this.open) {
      for (const w of windows.values()) if (first === undefined || w.firstSeq < first) first = w.firstSeq;
    }
    return first;
  }

  get isIdle(): boolean {
    for (const windows of this.open) if (windows.size > 0) return false;
    return true;
  }

  add(reading: ReadingInput, seq: number, wallNowMs: number): AddOutcome {
    this.lastWallMs = wallNowMs;
    if (seq > this.lastSeq) this.lastSeq = seq;
    if (reading.labels) this.labels = reading.labels;
    const tsMs = reading.tsMs;
    const sizes = this.settings.sizesMs;
    const largest = sizes.length - 1;
    const largestStart = alignDown(tsMs, sizes[largest]!);
    if (largestStart + sizes[largest]! > this.watermark) {
      const ids = this.seenIds.get(largestStart);
      if (ids?.has(reading.id)) return DUPLICATE;
      if (ids) ids.add(reading.id);
      else this.seenIds.set(largestStart, new Set([reading.id]));
    }
    const metrics = reading.metrics;
    let lateFor: number[] | undefined;
    let refused: Set<string> | undefined;
    for (let i = 0; i < sizes.length; i++) {
      const size = sizes[i]!;
      const startMs = alignDown(tsMs, size);
      if (startMs + size <= this.watermark) {
        lateFor ??= [];
        lateFor.push(size);
        continue;
      }
      let w = this.current[i];
      if (w === undefined || w.startMs !== startMs) {
        w = this.open[i]!.get(startMs);
        if (!w) {
          w = {
            startMs,
            endMs: startMs + size,
            names: [],
            aggregates: [],
            index: undefined,
            firstSeq: seq,
            emitted: false,
            dirty: false,
          };
          this.open[i]!.set(startMs, w);
        }
        this.current[i] = w;
      }
      for (const name in metrics) {
        let agg = aggregateOf(w, name);
        if (!agg) {
          if (w.names.length >= this.maxMetrics) {
            refused ??= new Set();
            refused.add(name);
            continue;
          }
          agg = new WindowAggregate();
          w.names.push(name);
          w.aggregates.push(agg);
          if (w.index) w.index.set(name, w.names.length - 1);
          else if (w.names.length > SCAN_METRICS) w.index = new Map(w.names.map((n, k) => [n, k]));
        }
        agg.add(metrics[name]!.value, tsMs);
        w.dirty = true;
      }
    }
    if (tsMs > this.maxTs) this.maxTs = tsMs;
    this.watermark = Math.max(this.watermark, this.maxTs - this.settings.allowedLatenessMs);
    if (lateFor === undefined && refused === undefined) return ON_TIME;
    return { lateFor: lateFor ?? [], duplicate: false, metricsRefused: refused?.size ?? 0 };
  }

  /**
   * Results due now: windows that reached their end and changed since last emitted, and windows
   * that became final. Final windows are forgotten.
   */
  collect(wallNowMs: number, results: WindowResult[] = []): WindowResult[] {
    const idleFor = wallNowMs - this.lastWallMs;
    const eventNow =
      idleFor >= this.settings.idleTimeoutMs && this.maxTs > Number.NEGATIVE_INFINITY
        ? this.maxTs + idleFor
        : this.maxTs;
    this.watermark = Math.max(this.watermark, eventNow - this.settings.allowedLatenessMs);
    const watermark = this.watermark;
    const sizes = this.settings.sizesMs;
    for (let i = 0; i < sizes.length; i++) {
      const size = sizes[i]!;
      for (const [startMs, w] of this.open[i]!) {
        const final = w.endMs <= watermark;
        if (w.endMs <= eventNow && (w.dirty || (final && !w.emitted))) {
          for (let m = 0; m < w.names.length; m++) {
            const result: WindowResult = {
              tenant: this.tenant,
              deviceId: this.deviceId,
              metric: w.names[m]!,
              windowMs: size,
              startMs,
              values: w.aggregates[m]!.values(),
              final,
            };
            if (this.labels) result.labels = this.labels;
            results.push(result);
          }
          w.emitted = true;
          w.dirty = false;
        }
        // A final window emitted before and unchanged since keeps that emission as its final one.
        if (final) {
          this.open[i]!.delete(startMs);
          if (this.current[i] === w) this.current[i] = undefined;
          if (i === sizes.length - 1) this.seenIds.delete(startMs);
        }
      }
    }
    return results;
  }
}

/** The window's aggregate of a metric, if it has one. */
function aggregateOf(w: OpenWindow, name: string): WindowAggregate | undefined {
  if (w.index) {
    const k = w.index.get(name);
    return k === undefined ? undefined : w.aggregates[k];
  }
  const names = w.names;
  for (let k = 0; k < names.length; k++) if (names[k] === name) return w.aggregates[k];
  return undefined;
}

export function alignDown(tsMs: number, sizeMs: number): number {
  return Math.floor(tsMs / sizeMs) * sizeMs;
}
