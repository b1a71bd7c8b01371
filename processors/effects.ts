import type { Point } from '@influxdata/influxdb-client';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import type { CanonicalEvent } from '../contract/event.js';
import { alertsSubject } from '../contract/measurements.js';
import type { AlertEngine, AlertTransition } from './alerts/alert-engine.js';
import type { PartitionEffects } from './consume/partition-consumer.js';
import type { InfluxWriter } from './sink/influx-writer.js';
import { telemetryPoint } from './sink/points.js';
import { aggregatePoint, alertPoint } from './sink/result-points.js';
import type { WindowResult } from './windows/device-windows.js';

/**
 * What a partition's events cause: raw points, window points, and alerts (points and a NATS
 * message each). Everything goes through one writer, so one durable write covers a batch.
 */
export class InfluxEffects implements PartitionEffects {
  constructor(
    private readonly writer: InfluxWriter,
    private readonly nc: NatsConnection,
    private readonly alerts: AlertEngine | undefined,
    private readonly log: Logger,
    private readonly onInvalid: (count: number) => void,
  ) {}

  get overloaded(): boolean {
    return this.writer.overloaded;
  }

  write(events: CanonicalEvent[], results: WindowResult[]): Promise<void> {
    const points: Point[] = [];
    for (const event of events) {
      try {
        const point = telemetryPoint(event);
        if (point) points.push(point);
      } catch (err) {
        this.onInvalid(1);
        this.log.error({ err, event: event.id }, 'event cannot be written as a point: skipped');
      }
      if (this.alerts) this.publishAlerts(this.alerts.onEvent(event, Date.now()), points);
    }
    for (const result of results) points.push(aggregatePoint(result));
    return this.writer.write(points);
  }

  /** Time-based alert transitions (absence, durations elapsed on quiet devices). */
  tick(wallNowMs: number): Promise<void> {
    if (!this.alerts) return Promise.resolve();
    const points: Point[] = [];
    this.publishAlerts(this.alerts.tick(wallNowMs), points);
    return points.length > 0 ? this.writer.write(points) : Promise.resolve();
  }

  private publishAlerts(transitions: AlertTransition[], points: Point[]): void {
    for (const t of transitions) {
      points.push(alertPoint(t));
      this.nc.publish(alertsSubject(t.tenant, t.deviceId), JSON.stringify(t));
      this.log.info({ alert: t.rule, device: t.deviceId, state: t.state, value: t.value }, 'alert');
    }
  }
}
