import { DEFAULT_MAX_FREED_DEVICES } from '../config.js';
import type { LimitReached } from '../metrics.js';
import {
  DeviceWindows,
  type ReadingInput,
  type WindowResult,
  type WindowSettings,
} from './device-windows.js';

/**
 * The windows of every device in one partition, and how far the partition may be acknowledged.
 *
 * Exactness through a crash, with ack-all (one ack covers every earlier message):
 * - `ackableSeq` is one below the first stream sequence of any open window. Every reading of a
 *   window that is open now comes after it, so a restart replays each open window in full.
 * - Each device's watermark is saved with the checkpoint. On replay, a reading for a window that
 *   was final at the checkpoint (ends at or before that watermark) is ignored: it was emitted as
 *   final already. Any other window was open at the checkpoint, so all its readings come after
 *   `ackSeq` and are replayed; it is rebuilt in full and emitted again with the same values, which
 *   InfluxDB overwrites. Replayed readings meet a watermark at least the saved one and at most what
 *   they met the first time for windows still open, so they are judged late or on time as before.
 *
 * Memory. A device silent for `deviceStateTtlMs` (DEVICE_STATE_TTL) with every window final has its
 * state freed; only its watermark is kept, so that a late reading of it can never reopen a final
 * window and overwrite its aggregate with a partial one. At most `maxFreedDevices`
 * (MAX_FREED_DEVICES) such watermarks are kept; beyond that the longest-freed one is folded into the
 * partition's `floor`, the watermark of every device the partition holds nothing about. The floor
 * is never below a forgotten watermark, so the fold only ever errs towards "late": a reading of
 * such a device (or of a device never seen) whose window ends at or before the floor is counted as
 * late and kept raw only, never aggregated into a window that may have been written as final.
 */
export interface PartitionCheckpoint {
  /** Every message up to this stream sequence is reflected in what was written. */
  ackSeq: number;
  /**
   * `${tenant}/${deviceId}` → that device's watermark (every window ending at or before it is final),
   * for the devices a replay from ackSeq meets again: kept until the replay is over.
   */
  watermarks: Record<string, number>;
  /** Other devices' watermarks, the most recently active first: they may be folded into the floor. */
  freed?: Record<string, number>;
  /** Watermark of every device in neither; none (−∞) when left out. */
  floor?: number;
}

export interface PartitionWindowSettings extends WindowSettings {
  /** DEVICE_STATE_TTL; never when left out. */
  deviceStateTtlMs?: number;
  /** MAX_FREED_DEVICES; DEFAULT_MAX_FREED_DEVICES when left out. */
  maxFreedDevices?: number;
}

/**
 * The watermarks a checkpoint may hold, for checkpoint-fit.ts to fit into the checkpoint's size:
 * `required` ones cannot be left out without a replay judging readings otherwise than the first
 * time; `optional` ones can, folded into the floor.
 */
export interface CheckpointPlan {
  ackSeq: number;
  /** −∞ when there is none. */
  floor: number;
  /** Devices with readings after ackSeq: the replay meets them again and needs their exact watermark. */
  required: Array<[key: string, watermark: number]>;
  /** Every other watermark, the most recently active first (the first to be kept). */
  optional: Array<[key: string, watermark: number]>;
}

export interface PartitionReading extends ReadingInput {
  tenant: string;
  deviceId: string;
}

const keyOf = (tenant: string, deviceId: string) => `${tenant}/${deviceId}`;

export class PartitionWindows {
  private readonly devices = new Map<string, DeviceWindows>();
  /** Watermarks of devices whose state was freed, longest-freed first. */
  private readonly freed = new Map<string, number>();
  /**
   * Restored watermarks the replay needs exactly (the checkpoint's `watermarks`): never folded, and
   * required in every checkpoint, until their device is seen again or the replay is over.
   */
  private readonly pinned = new Map<string, number>();
  private floor = Number.NEGATIVE_INFINITY;
  /** Devices with readings since the last collect. */
  private readonly touched = new Set<DeviceWindows>();
  private lastSeq = 0;
  private readonly ttlMs: number;
  private readonly maxFreed: number;

  constructor(
    private readonly settings: PartitionWindowSettings,
    restored?: PartitionCheckpoint,
    private readonly onLimit: LimitReached = () => undefined,
  ) {
    this.ttlMs = settings.deviceStateTtlMs ?? Number.POSITIVE_INFINITY;
    this.maxFreed = settings.maxFreedDevices ?? DEFAULT_MAX_FREED_DEVICES;
    if (!restored) return;
    this.lastSeq = restored.ackSeq;
    if (restored.floor !== undefined && Number.isFinite(restored.floor)) this.floor = restored.floor;
    for (const [key, watermark] of Object.entries(restored.watermarks)) this.pinned.set(key, watermark);
    // Restored devices have no state yet: they start as freed ones, least recently active first.
    const freed = Object.entries(restored.freed ?? {});
    for (let i = freed.length - 1; i >= 0; i--) this.freed.set(freed[i]![0], freed[i]![1]);
    this.evict();
  }

  /**
   * The replay from the restored checkpoint has caught up with the stream: the watermarks it needed
   * exactly are ordinary freed ones from now on.
   */
  replayCaughtUp(): void {
    if (this.pinned.size === 0) return;
    for (const [key, watermark] of this.pinned) this.freed.set(key, watermark);
    this.pinned.clear();
    this.evict();
  }

  /** Devices whose state is held now. */
  get deviceCount(): number {
    return this.devices.size;
  }

  /** Devices known only by their watermark. */
  get freedCount(): number {
    return this.freed.size + this.pinned.size;
  }

  /** The watermark every device the partition knows nothing about gets. */
  get floorWatermark(): number {
    return this.floor;
  }

  add(reading: PartitionReading, seq: number, wallNowMs: number) {
    const key = keyOf(reading.tenant, reading.deviceId);
    let device = this.devices.get(key);
    if (!device) {
      const kept = this.pinned.get(key) ?? this.freed.get(key);
      this.pinned.delete(key);
      this.freed.delete(key);
      device = new DeviceWindows(reading.tenant, reading.deviceId, this.settings, kept ?? this.floor);
      this.devices.set(key, device);
    }
    if (seq > this.lastSeq) this.lastSeq = seq;
    this.touched.add(device);
    return device.add(reading, seq, wallNowMs);
  }

  /**
   * Every window result due now, across the partition's devices; with `touchedOnly`, of the devices
   * that had readings since the last collect (only they can have windows due on event time; windows
   * due on wall time, for quiet devices, need a full collect, which also frees silent devices).
   */
  collect(wallNowMs: number, touchedOnly = false): WindowResult[] {
    const results: WindowResult[] = [];
    if (touchedOnly) {
      for (const device of this.touched) if (!device.isIdle) device.collect(wallNowMs, results);
    } else {
      for (const [key, device] of this.devices) {
        if (!device.isIdle) device.collect(wallNowMs, results);
        if (device.isIdle && wallNowMs - device.lastWallMs >= this.ttlMs) this.free(key, device);
      }
    }
    this.touched.clear();
    return results;
  }

  /** Highest stream sequence that may be acknowledged once the results collected so far are written. */
  get ackableSeq(): number {
    let first: number | undefined;
    for (const device of this.devices.values()) {
      const seq = device.firstOpenSeq;
      if (seq !== undefined && (first === undefined || seq < first)) first = seq;
    }
    return first === undefined ? this.lastSeq : first - 1;
  }

  /** Every watermark as it stands, for checkpoint-fit.ts to fit into a checkpoint. */
  checkpointPlan(): CheckpointPlan {
    const ackSeq = this.ackableSeq;
    const required: CheckpointPlan['required'] = [...this.pinned];
    const optional: CheckpointPlan['optional'] = [];
    for (const [key, device] of this.devices) {
      if (!Number.isFinite(device.watermark)) continue;
      (device.lastSeq > ackSeq ? required : optional).push([key, device.watermark]);
    }
    const freed = [...this.freed];
    for (let i = freed.length - 1; i >= 0; i--) optional.push(freed[i]!);
    return { ackSeq, floor: this.floor, required, optional };
  }

  /** The whole checkpoint, every watermark in it (checkpoint-fit.ts bounds its size). */
  checkpoint(): PartitionCheckpoint {
    return checkpointOf(this.checkpointPlan());
  }

  private free(key: string, device: DeviceWindows): void {
    this.devices.delete(key);
    this.onLimit('DEVICE_STATE_TTL');
    if (!Number.isFinite(device.watermark)) return;
    this.freed.set(key, device.watermark);
    this.evict();
  }

  /** Folds the longest-freed watermarks into the floor until MAX_FREED_DEVICES are left. */
  private evict(): void {
    let folded = 0;
    for (const [key, watermark] of this.freed) {
      if (this.freed.size <= this.maxFreed) break;
      this.freed.delete(key);
      if (watermark > this.floor) this.floor = watermark;
      folded++;
    }
    if (folded > 0) this.onLimit('MAX_FREED_DEVICES', folded);
  }
}

/** A checkpoint holding every watermark of the plan. */
export function checkpointOf(
  plan: CheckpointPlan,
  optional: CheckpointPlan['optional'] = plan.optional,
  floor = plan.floor,
): PartitionCheckpoint {
  const checkpoint: PartitionCheckpoint = {
    ackSeq: plan.ackSeq,
    watermarks: Object.fromEntries(plan.required),
  };
  if (optional.length > 0) checkpoint.freed = Object.fromEntries(optional);
  if (Number.isFinite(floor)) checkpoint.floor = floor;
  return checkpoint;
}
