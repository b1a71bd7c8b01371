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
 */
export interface PartitionCheckpoint {
  /** Every message up to this stream sequence is reflected in what was written. */
  ackSeq: number;
  /** `${tenant}/${deviceId}` → that device's watermark (every window ending at or before it is final). */
  watermarks: Record<string, number>;
}

export interface PartitionReading extends ReadingInput {
  tenant: string;
  deviceId: string;
}

export class PartitionWindows {
  private readonly devices = new Map<string, DeviceWindows>();
  /** Devices with readings since the last collect. */
  private readonly touched = new Set<DeviceWindows>();
  private lastSeq = 0;

  constructor(
    private readonly settings: WindowSettings,
    restored?: PartitionCheckpoint,
  ) {
    if (!restored) return;
    this.lastSeq = restored.ackSeq;
    for (const [key, watermark] of Object.entries(restored.watermarks)) {
      const slash = key.indexOf('/');
      const device = new DeviceWindows(key.slice(0, slash), key.slice(slash + 1), settings, watermark);
      this.devices.set(key, device);
    }
  }

  get deviceCount(): number {
    return this.devices.size;
  }

  /** Every device seen in this partition (or restored from its checkpoint), as [tenant, deviceId]. */
  deviceIds(): Array<readonly [string, string]> {
    return [...this.devices.values()].map((d) => [d.tenant, d.deviceId] as const);
  }

  add(reading: PartitionReading, seq: number, wallNowMs: number) {
    const key = `${reading.tenant}/${reading.deviceId}`;
    let device = this.devices.get(key);
    if (!device) {
      device = new DeviceWindows(reading.tenant, reading.deviceId, this.settings);
      this.devices.set(key, device);
    }
    if (seq > this.lastSeq) this.lastSeq = seq;
    this.touched.add(device);
    return device.add(reading, seq, wallNowMs);
  }

  /**
   * Every window result due now, across the partition's devices; with `touchedOnly`, of the devices
   * that had readings since the last collect (only they can have windows due on event time; windows
   * due on wall time, for quiet devices, need a full collect).
   */
  collect(wallNowMs: number, touchedOnly = false): WindowResult[] {
    const results: WindowResult[] = [];
    for (const device of touchedOnly ? this.touched : this.devices.values()) {
      if (!device.isIdle) results.push(...device.collect(wallNowMs));
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

  checkpoint(): PartitionCheckpoint {
    const watermarks: PartitionCheckpoint['watermarks'] = {};
    for (const [key, device] of this.devices) {
      if (Number.isFinite(device.watermark)) watermarks[key] = device.watermark;
    }
    return { ackSeq: this.ackableSeq, watermarks };
  }
}
