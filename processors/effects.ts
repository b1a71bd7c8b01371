import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { backoffMs } from '../common/backoff.js';
import { formatDuration } from '../common/duration.js';
import type { Logger } from '../common/logger.js';
import type { AlertTransition } from '../contract/alerts.js';
import { DEVICE_WINDOW_BATCH_MAX, type DeviceWindow } from '../contract/event.js';
import { alertsSubject, PROMOTED_LABELS } from '../contract/measurements.js';
import { windowsSubject } from '../contract/subjects.js';
import type { PartitionEffects } from './consume/partition-consumer.js';
import { InfluxWriteRejectedError } from './errors.js';
import type { PartitionBatch } from './partition-pipeline.js';
import type { FleetRow } from './rollups/fleet-rollup.js';
import { fleetLine } from './sink/lines.js';
import type { TsdbSink } from './sink/tsdb-sink.js';
import type { WindowResult } from './windows/device-windows.js';

export interface EffectsOptions {
  sink: TsdbSink;
  nc: NatsConnection;
  js: JetStreamClient;
  log: Logger;
  onInvalid: (count: number) => void;
  /** Publish every device-window emission to WINDOWS for the fleet rollup. */
  publishWindows: boolean;
}

const PUBLISH_RETRY_MIN_MS = 100;
const PUBLISH_RETRY_MAX_MS = 5_000;

/**
 * A partition's batch (partition-pipeline.ts) sent where it goes: raw and derived lines to the TSDB,
 * alert transitions on NATS, each window emission on WINDOWS for the fleet rollup. I/O only. A batch
 * counts as written once the TSDB accepted its lines and JetStream stored its window messages.
 */
export class InfluxEffects implements PartitionEffects {
  private closed = false;

  constructor(private readonly o: EffectsOptions) {}

  get overloaded(): boolean {
    return this.o.sink.overloaded;
  }

  whenAccepting(): Promise<void> {
    return this.o.sink.whenAccepting();
  }

  /** Stops retrying window publications: their batches then count as not written, and replay. */
  close(): void {
    this.closed = true;
  }

  write(batch: PartitionBatch): Promise<void> {
    this.publishAlerts(batch.alerts);
    const written: Promise<unknown>[] = [
      this.written(this.o.sink.raw.write(batch.raw), batch.events),
      this.written(this.o.sink.ordered.write(batch.derived), 0),
    ];
    if (this.o.publishWindows && batch.windows.length > 0) written.push(this.publishWindows(batch.windows));
    return Promise.all(written).then(() => undefined);
  }

  /**
   * Lines refused for good (the TSDB rejects them) count as done: retrying cannot help, and holding
   * the partition on them would stop everything behind it. Any other failure means not written, and
   * the caller replays.
   */
  private written(write: Promise<void>, events: number): Promise<void> {
    return write.catch((err: unknown) => {
      if (!(err instanceof InfluxWriteRejectedError)) throw err;
      this.o.log.error({ err, events }, 'lines refused by the TSDB');
      this.o.onInvalid(events);
    });
  }

  /** Alerts go out at once, like NATS's other at-most-once notices; their lines are in the batch. */
  private publishAlerts(transitions: AlertTransition[]): void {
    for (const t of transitions) {
      this.o.nc.publish(alertsSubject(t.tenant, t.deviceId), JSON.stringify(t));
      this.o.log.info({ alert: t.rule, device: t.deviceId, state: t.state, value: t.value }, 'alert');
    }
  }

  /** One WINDOWS message per tenant (and per DEVICE_WINDOW_BATCH_MAX), in emission order. */
  private publishWindows(results: WindowResult[]): Promise<unknown> {
    const byTenant = new Map<string, DeviceWindow[]>();
    for (const r of results) {
      const batch = byTenant.get(r.tenant);
      if (batch) batch.push(deviceWindow(r));
      else byTenant.set(r.tenant, [deviceWindow(r)]);
    }
    const stored: Promise<void>[] = [];
    for (const [tenant, windows] of byTenant) {
      for (let i = 0; i < windows.length; i += DEVICE_WINDOW_BATCH_MAX)
        stored.push(this.store(windowsSubject(tenant), windows.slice(i, i + DEVICE_WINDOW_BATCH_MAX)));
    }
    return Promise.all(stored);
  }

  /** Until JetStream stored it: NATS being away is waited out, like the TSDB. */
  private async store(subject: string, windows: DeviceWindow[]): Promise<void> {
    const body = JSON.stringify(windows);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.o.js.publish(subject, body);
        return;
      } catch (err) {
        if (this.closed) throw err;
        if (attempt === 0) this.o.log.warn({ err, subject }, 'windows not stored in WINDOWS; retrying');
        const delay = backoffMs(attempt, PUBLISH_RETRY_MIN_MS, PUBLISH_RETRY_MAX_MS);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}

/**
 * How the fleet rollup's rows are written. A row that cannot be a line (a label value ending in a
 * backslash) is skipped, and rows the TSDB refuses for good are dropped, both logged and counted:
 * handed back, they would be retried at every flush for ever, and every other row of the batch
 * with them. Each fleet window is rewritten whole at its next change anyway.
 */
export function fleetRowsWriter(
  sink: Pick<TsdbSink, 'ordered'>,
  log: Logger,
  onInvalid: (count: number) => void,
): (rows: FleetRow[]) => Promise<void> {
  return async (rows) => {
    const lines: string[] = [];
    for (const row of rows) {
      try {
        lines.push(fleetLine(row));
      } catch (err) {
        onInvalid(1);
        log.error({ err, tenant: row.tenant, metric: row.metric }, 'fleet row cannot be a line: skipped');
      }
    }
    try {
      await sink.ordered.write(lines);
    } catch (err) {
      if (!(err instanceof InfluxWriteRejectedError)) throw err;
      onInvalid(lines.length);
      log.error({ err, rows: lines.length }, 'fleet rows refused by the TSDB: dropped');
    }
  };
}

/** A window result as the fleet rollup receives it (only the promoted labels travel). */
export function deviceWindow(r: WindowResult): DeviceWindow {
  const labels: Record<string, string> = {};
  for (const label of PROMOTED_LABELS) {
    const value = r.labels?.[label];
    if (value) labels[label] = value;
  }
  return {
    tenant: r.tenant,
    deviceId: r.deviceId,
    labels,
    metric: r.metric,
    window: formatDuration(r.windowMs),
    windowMs: r.windowMs,
    startMs: r.startMs,
    count: r.values.count,
    sum: r.values.sum,
    min: r.values.min,
    max: r.values.max,
    mean: r.values.mean,
    final: r.final,
  };
}
