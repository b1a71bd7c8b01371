import { Point } from '@influxdata/influxdb-client';
import { formatDuration } from '../../common/duration.js';
import {
  AGGREGATE_FIELDS,
  AGGREGATE_MEASUREMENT,
  ALERTS_MEASUREMENT,
  TAG_DEVICE,
  TAG_METRIC,
  TAG_RULE,
  TAG_SEVERITY,
  TAG_TENANT,
  TAG_WINDOW,
} from '../../contract/measurements.js';
import type { AlertTransition } from '../alerts/alert-engine.js';
import type { WindowResult } from '../windows/device-windows.js';

/**
 * Points for what the processors derive. Same series and time for every emission of a window, so
 * a corrected window overwrites the earlier one in InfluxDB. Numbers are always float fields (see
 * points.ts).
 */
export function aggregatePoint(r: WindowResult): Point {
  const point = new Point(AGGREGATE_MEASUREMENT)
    .tag(TAG_TENANT, r.tenant)
    .tag(TAG_DEVICE, r.deviceId)
    .tag(TAG_METRIC, r.metric)
    .tag(TAG_WINDOW, formatDuration(r.windowMs))
    .timestamp(new Date(r.startMs));
  for (const field of AGGREGATE_FIELDS) point.floatField(field, r.values[field]);
  return point;
}

export function alertPoint(t: AlertTransition): Point {
  return new Point(ALERTS_MEASUREMENT)
    .tag(TAG_TENANT, t.tenant)
    .tag(TAG_DEVICE, t.deviceId)
    .tag(TAG_RULE, t.rule)
    .tag(TAG_SEVERITY, t.severity)
    .floatField('value', Number.isFinite(t.value) ? t.value : 0)
    .stringField('state', t.state)
    .timestamp(new Date(t.atMs));
}
