/**
 * What the processors write to InfluxDB: measurement, tag and field names, defined once. Dashboards
 * and the simulator's verifier read these names from here.
 *
 *   telemetry       tags tenant, device, + PROMOTED_LABELS     fields: one per metric (canonical unit)
 *                   time: event time
 *   telemetry_agg   tags tenant, device, metric, window         fields: AGGREGATE_FIELDS
 *                   time: window start
 *   fleet_agg       tags tenant, metric, window, group, group_value
 *                   fields: devices, count, mean, min, max
 *                   time: window start. group is `all` (group_value `all`) or a promoted label
 *                   (`type`, `site`) with its value; mean is the mean over every reading
 *   alerts          tags tenant, device, rule, severity         fields: value, state ("firing"|"resolved")
 *   device_status   tags tenant, device                         fields: online (1|0), reason
 */
export const TELEMETRY_MEASUREMENT = 'telemetry';
export const AGGREGATE_MEASUREMENT = 'telemetry_agg';
export const FLEET_MEASUREMENT = 'fleet_agg';
export const ALERTS_MEASUREMENT = 'alerts';
export const DEVICE_STATUS_MEASUREMENT = 'device_status';

export const TAG_TENANT = 'tenant';
export const TAG_DEVICE = 'device';
export const TAG_METRIC = 'metric';
export const TAG_WINDOW = 'window';
export const TAG_RULE = 'rule';
export const TAG_SEVERITY = 'severity';
export const TAG_GROUP = 'group';
export const TAG_GROUP_VALUE = 'group_value';
/** The fleet_agg group covering every device of a tenant. */
export const GROUP_ALL = 'all';

/**
 * Registry labels copied onto raw telemetry as tags. Kept short on purpose: every tag multiplies
 * series cardinality.
 */
export const PROMOTED_LABELS = ['type', 'site'] as const;

export const AGGREGATE_FIELDS = [
  'count',
  'sum',
  'min',
  'max',
  'mean',
  'last',
  'stddev',
  'p50',
  'p95',
  'p99',
] as const;
export type AggregateField = (typeof AGGREGATE_FIELDS)[number];

export const FLEET_FIELDS = ['devices', 'count', 'mean', 'min', 'max'] as const;
export type FleetField = (typeof FLEET_FIELDS)[number];

/** Alerts are also published on NATS for whoever reacts to them. */
export const ALERTS_PREFIX = 'alerts';

export function alertsSubject(tenant: string, deviceId: string): string {
  return `${ALERTS_PREFIX}.${tenant}.${deviceId}`;
}
