import type { DeviceWindow } from '../../contract/event.js';
import { GROUP_ALL, PROMOTED_LABELS } from '../../contract/measurements.js';
import { DEFAULT_FLEET_MAX_ROWS_PER_TENANT } from '../config.js';
import type { LimitReached } from '../metrics.js';

/**
 * Fleet rollups: per tenant, metric and window, the devices' window results merged, once over every
 * device (group `all`) and once per value of each promoted label (`type`, `site`). One row per fleet
 * window and group, as the `fleet_agg` measurement has it.
 *
 * A fleet window holds each device's latest emission of its device window, not a running sum: a
 * correction, a final emission or a replay of the same device window replaces the earlier one, so
 * nothing is counted twice however often a partition consumer re-emits.
 *
 * Time is the stream's, so that whoever replays the same messages builds the same state:
 * - A device window is accepted only when its message was stored within the horizon H of the
 *   window's end (|t − end| ≤ H). Partition consumers emit a window between its end and its final
 *   emission (allowed lateness + idle timeout later), which H covers. A device that replays hours-old
 *   data (an offline buffer, a backlog) has its windows emitted long after the fleet window was
 *   written and dropped: merging it then would start that fleet window again from this one device
 *   and overwrite the complete row with a partial one. Such windows are skipped (counted); the
 *   device's own `telemetry_agg` rows still have them.
 * - A fleet window is dropped once time passes end + H: no accepted message can reach it any more.
 *   Rows are only ever collected for windows still within that retention, so a window rebuilt after
 *   it ended (from a message processed late, or from the head of a replay that began in the middle
 *   of its messages) is never written.
 */
export interface FleetRow {
  tenant: string;
  metric: string;
  /** Formatted window size, as in the `window` tag. */
  window: string;
  startMs: number;
  /** GROUP_ALL, or a promoted label. */
  group: string;
  /** GROUP_ALL for the `all` group, else the label's value. */
  groupValue: string;
  /** Devices with a result in this window and group. */
  devices: number;
  /** Readings over all those devices. */
  count: number;
  /** Mean over every reading (sum of sums / sum of counts), not a mean of device means. */
  mean: number;
  min: number;
  max: number;
}

export type AddOutcome = 'accepted' | 'skipped';

export interface FleetRollupOptions {
  /** See the module comment; at least largest window + allowed lateness + idle timeout + margin. */
  horizonMs?: number;
  /** FLEET_MAX_ROWS_PER_TENANT; DEFAULT_FLEET_MAX_ROWS_PER_TENANT when left out. */
  maxRowsPerTenant?: number;
  onLimit?: LimitReached;
}

export const DEFAULT_ROLLUP_HORIZON_MS = 10 * 60_000;

interface DeviceStats {
  count: number;
  sum: number;
  min: number;
  max: number;
}

interface FleetWindow {
  key: string;
  tenant: string;
  metric: string;
  window: string;
  startMs: number;
  endMs: number;
  group: string;
  groupValue: string;
  devices: Map<string, DeviceStats>;
}

/** Everything about windows ending at one instant: dropped together once that end is past the horizon. */
interface EndBucket {
  fleet: Map<string, FleetWindow>;
  /** Fleet windows per tenant. */
  rows: Map<string, number>;
  /** Device window → the fleet windows its latest emission is in (its labels may change between emissions). */
  memberOf: Map<string, string[]>;
}

/**
 * Identifies a fleet window. Tenants, metrics, window sizes and group names cannot contain NUL (their
 * grammars in contract/ids.ts exclude it), and the label value, which might, comes last: unambiguous.
 * Plain concatenation: this runs for every device-window emission, three times.
 */
export function fleetRowKey(
  r: Pick<FleetRow, 'tenant' | 'metric' | 'window' | 'startMs' | 'group' | 'groupValue'>,
): string {
  return `${r.tenant}\0${r.metric}\0${r.window}\0${r.startMs}\0${r.group}\0${r.groupValue}`;
}

export class FleetRollup {
  readonly horizonMs: number;
  /** Window end → its windows. Few keys: window sizes × the windows within the horizon. */
  private readonly buckets = new Map<number, EndBucket>();
  private readonly dirty = new Set<FleetWindow>();
  /** Latest time seen by expire/collect; never moves back, so a dropped window stays unwritable. */
  private nowMs = Number.NEGATIVE_INFINITY;

  private readonly maxRows: number;
  private readonly onLimit: LimitReached;

  constructor(options: FleetRollupOptions = {}) {
    this.horizonMs = options.horizonMs ?? DEFAULT_ROLLUP_HORIZON_MS;
    if (!(this.horizonMs > 0)) throw new RangeError(`horizonMs must be positive, got ${this.horizonMs}`);
    this.maxRows = options.maxRowsPerTenant ?? DEFAULT_FLEET_MAX_ROWS_PER_TENANT;
    this.onLimit = options.onLimit ?? (() => undefined);
  }

  /** Fleet windows held (every group counted). */
  get size(): number {
    let n = 0;
    for (const b of this.buckets.values()) n += b.fleet.size;
    return n;
  }

  /** Merges one emission of a device window, stored in the stream at `streamTimeMs`. */
  add(dw: DeviceWindow, streamTimeMs: number): AddOutcome {
    const endMs = dw.startMs + dw.windowMs;
    if (Math.abs(streamTimeMs - endMs) > this.horizonMs) return 'skipped';
    let bucket = this.buckets.get(endMs);
    if (!bucket) {
      bucket = { fleet: new Map(), rows: new Map(), memberOf: new Map() };
      this.buckets.set(endMs, bucket);
    }
    const stats: DeviceStats = { count: dw.count, sum: dw.sum, min: dw.min, max: dw.max };
    const prefix = `${dw.tenant}\0${dw.metric}\0${dw.window}\0${dw.startMs}\0`;
    // The fleet windows this emission belongs to: `all`, then each promoted label the device has.
    const wanted = [`${prefix}${GROUP_ALL}\0${GROUP_ALL}`];
    for (const label of PROMOTED_LABELS) {
      const value = dw.labels[label];
      if (value !== undefined) wanted.push(`${prefix}${label}\0${value}`);
    }
    const deviceKey = `${prefix}${dw.deviceId}`;
    // A device whose label changed between emissions leaves its old group first (which may make
    // room for its new one): the latest emission is the whole truth about that device window.
    const old = bucket.memberOf.get(deviceKey);
    if (old !== undefined && !sameKeys(old, wanted)) {
      for (const key of old) {
        if (wanted.includes(key)) continue;
        const fw = bucket.fleet.get(key);
        if (!fw) continue;
        fw.devices.delete(dw.deviceId);
        this.dirty.add(fw);
        // Nothing left to write; a row written before for it stays in the TSDB (rows are not deleted).
        if (fw.devices.size === 0) {
          bucket.fleet.delete(key);
          bucket.rows.set(fw.tenant, (bucket.rows.get(fw.tenant) ?? 1) - 1);
        }
      }
    }
    const keys: string[] = [];
    for (let i = 0; i < wanted.length; i++) {
      const key = wanted[i]!;
      let fw = bucket.fleet.get(key);
      if (!fw) {
        const rows = bucket.rows.get(dw.tenant) ?? 0;
        if (rows >= this.maxRows) {
          this.onLimit('FLEET_MAX_ROWS_PER_TENANT');
          continue;
        }
        bucket.rows.set(dw.tenant, rows + 1);
        const label = i === 0 ? undefined : groupOf(dw.labels, i);
        fw = {
          key,
          tenant: dw.tenant,
          metric: dw.metric,
          window: dw.window,
          startMs: dw.startMs,
          endMs,
          group: label === undefined ? GROUP_ALL : label,
          groupValue: label === undefined ? GROUP_ALL : dw.labels[label]!,
          devices: new Map(),
        };
        bucket.fleet.set(key, fw);
      }
      keys.push(key);
      fw.devices.set(dw.deviceId, stats);
      this.dirty.add(fw);
    }
    bucket.memberOf.set(deviceKey, keys);
    return 'accepted';
  }

  /**
   * Rows of the fleet windows changed since the last collect and still within retention (windows
   * past it are dropped first, unwritten).
   */
  collect(nowMs: number): FleetRow[] {
    this.expire(nowMs);
    const rows: FleetRow[] = [];
    for (const fw of this.dirty) {
      if (fw.devices.size > 0 && this.buckets.get(fw.endMs)?.fleet.get(fw.key) === fw) rows.push(toRow(fw));
    }
    this.dirty.clear();
    return rows;
  }

  /** Drops the windows that ended more than the horizon before `nowMs`. */
  expire(nowMs: number): void {
    if (nowMs > this.nowMs) this.nowMs = nowMs;
    const limit = this.nowMs - this.horizonMs;
    for (const endMs of this.buckets.keys()) {
      if (endMs < limit) this.buckets.delete(endMs);
    }
    for (const fw of this.dirty) if (fw.endMs < limit) this.dirty.delete(fw);
  }
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The promoted label behind the i-th wanted group (i ≥ 1): the (i − 1)-th one the labels have. */
function groupOf(labels: Readonly<Record<string, string>>, i: number): string | undefined {
  let n = 0;
  for (const label of PROMOTED_LABELS) {
    if (labels[label] === undefined) continue;
    if (++n === i) return label;
  }
  return undefined;
}

function toRow(fw: FleetWindow): FleetRow {
  let count = 0;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  // Recomputed from the devices each time, in insertion order: the same messages give the same
  // floating-point result on any owner, and replacing a device never leaves rounding residue behind.
  for (const s of fw.devices.values()) {
    count += s.count;
    sum += s.sum;
    if (s.min < min) min = s.min;
    if (s.max > max) max = s.max;
  }
  return {
    tenant: fw.tenant,
    metric: fw.metric,
    window: fw.window,
    startMs: fw.startMs,
    group: fw.group,
    groupValue: fw.groupValue,
    devices: fw.devices.size,
    count,
    mean: sum / count,
    min,
    max,
  };
}
