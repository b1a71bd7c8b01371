import { Point, type WritePrecisionType } from '@influxdata/influxdb-client';
import type { CanonicalEvent } from '../../contract/event.js';
import {
  PROMOTED_LABELS,
  TAG_DEVICE,
  TAG_TENANT,
  TELEMETRY_MEASUREMENT,
} from '../../contract/measurements.js';
import { PointInvalidError } from '../errors.js';

/**
 * Builders from the contract to InfluxDB `Point`s. Pure: no I/O, the writer (influx-writer.ts) sends
 * them. Times are set as `Date`s and serialised at WRITE_PRECISION by the writer; event times in the
 * contract are ISO-8601 with millisecond precision at most, so 'ms' loses nothing and keeps lines short.
 * Every builder writes numbers with `floatField`, so a field never flips between integer and float
 * (InfluxDB rejects a field whose type changes within a shard).
 */
export const WRITE_PRECISION: WritePrecisionType = 'ms';

function checkTag(event: CanonicalEvent, name: string, value: string): void {
  // The client escapes spaces, commas and `=`, but not a trailing backslash, which would escape the
  // separator after it and corrupt the line (Point.tag: "must not end with backslash").
  if (value.endsWith('\\')) {
    throw new PointInvalidError(`tag ${name} ends with a backslash`, event.id);
  }
}

/**
 * One `telemetry` point per canonical event: tags tenant, device and the promoted labels the event
 * carries (an empty label is left out, as InfluxDB has no empty tag values); one float field per
 * metric in its canonical unit; time = event time. Undefined when the event has no metrics (nothing to
 * store).
 */
export function telemetryPoint(
  event: CanonicalEvent,
  promotedLabels: readonly string[] = PROMOTED_LABELS,
): Point | undefined {
  const names = Object.keys(event.metrics);
  if (names.length === 0) return undefined;
  checkTag(event, TAG_TENANT, event.tenant);
  checkTag(event, TAG_DEVICE, event.deviceId);
  const time = new Date(event.ts);
  if (Number.isNaN(time.getTime())) throw new PointInvalidError(`ts ${event.ts} is not a date`, event.id);
  const point = new Point(TELEMETRY_MEASUREMENT)
    .tag(TAG_TENANT, event.tenant)
    .tag(TAG_DEVICE, event.deviceId)
    .timestamp(time);
  for (const label of promotedLabels) {
    const value = event.labels[label];
    if (value === undefined || value === '') continue;
    checkTag(event, label, value);
    point.tag(label, value);
  }
  for (const name of names) {
    try {
      point.floatField(name, event.metrics[name]!.value);
    } catch (err) {
      throw new PointInvalidError(`metric ${name} is not a finite number`, event.id, { cause: err });
    }
  }
  return point;
}
