/**
 * Why the gateway refused a message or a reading: the `reason` a dead letter carries (on
 * `deadletter.{tenant}.{reason}`, and per rejected reading in its `rejections`), and the `reason`
 * label of gateway_deadletters_total. Stable codes; each is documented in the README's table, which
 * a test keeps in step. Readers should take a code they do not know as a rejection all the same: a
 * newer gateway may add codes (the dead-letter schema keeps `reason` a string for that).
 */
export const REJECTION_REASONS = {
  PAYLOAD_TOO_LARGE: 'payload larger than MAX_PAYLOAD_BYTES',
  PAYLOAD_NOT_UTF8: 'payload is not valid UTF-8',
  PAYLOAD_NOT_JSON: 'payload is not JSON',
  PAYLOAD_NOT_CBOR:
    'payload on a `/cbor` topic (or sent as `application/cbor`) is not one CBOR data item with text map keys',
  BATCH_EMPTY: 'payload is an empty JSON array',
  BATCH_TOO_LARGE: 'batch of more readings than MAX_READINGS_PER_PUBLISH; none of them is stored',
  VERSION_UNSUPPORTED: '`v` names no payload version this gateway knows',
  SCHEMA_INVALID: 'reading does not have the shape of its version',
  METRICS_EMPTY: '`metrics` has no entries',
  TOO_MANY_METRICS: 'more metrics in one reading than allowed (256)',
  METRIC_NAME_INVALID: 'metric name outside [A-Za-z0-9_.-]{1,64}, or a reserved name',
  VALUE_INVALID: 'metric value is not a finite number or a boolean',
  TS_INVALID: '`ts` is neither epoch milliseconds nor an ISO-8601 date-time with zone',
  TS_IN_FUTURE: '`ts` further in the future than TS_MAX_FUTURE_MS',
  TS_TOO_OLD: '`ts` older than TS_MAX_AGE_MS',
  SEQ_INVALID: '`seq` is not an integer ≥ 0',
  UNIT_UNKNOWN: 'unit not in the units table',
  UNIT_MISMATCH: "unit is of another quantity than the metric's (e.g. psi for temperature)",
  METRIC_LIMIT:
    'reading names a metric new to its device past DEVICE_MAX_METRICS distinct names (TENANT_MAX_METRICS for its tenant)',
  TOPIC_UNKNOWN: 'published under the device’s own root, but not on a topic of the contract',
  CHILD_DENIED:
    'a gateway device published for a device it may not speak for (another tenant’s, one registered on its own or through another gateway device, not in its list, or disabled)',
  CHILD_LIMIT:
    'a gateway device published for a new child past GATEWAY_DEVICE_MAX_CHILDREN registered through it',
} as const;

export type RejectionReason = keyof typeof REJECTION_REASONS;
