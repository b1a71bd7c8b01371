/** A Sparkplug B edge node's (README, Sparkplug B), apart so that tests can tell them from a JSON device's. */
export const SPARKPLUG_REJECTION_REASONS = {
  SPARKPLUG_BAD_PAYLOAD:
    'not a Sparkplug B payload, compressed, or without what its message type needs (seq, bdSeq, metric names of at most 256 characters and datatypes in a birth, unique aliases); a rebirth is requested',
  SPARKPLUG_SEQ_GAP:
    '`seq` is not the one after the edge node’s previous message: refused, and so is all it sends until the rebirth requested',
  SPARKPLUG_NO_BIRTH:
    'data, birth or death of an edge node or device with no birth in force (never born, dead, or awaiting a rebirth); a rebirth is requested',
  SPARKPLUG_UNKNOWN_METRIC: 'data names an alias or metric its birth did not define; a rebirth is requested',
  SPARKPLUG_BDSEQ_MISMATCH:
    'NDEATH not of the NBIRTH in force: another bdSeq, or from another connection (the will of a connection taken over); presence unchanged',
  SPARKPLUG_ID_INVALID:
    'Sparkplug device id outside [A-Za-z0-9_-]{1,64} (group id: 1–128 characters, no control characters)',
  SPARKPLUG_LIMIT:
    'a birth past SPARKPLUG_MAX_METRICS_PER_BIRTH, SPARKPLUG_MAX_METRICS_PER_NODE or SPARKPLUG_MAX_DEVICES_PER_NODE, or data of what it would have defined',
} as const;

export type SparkplugRejectionReason = keyof typeof SPARKPLUG_REJECTION_REASONS;

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
  ...SPARKPLUG_REJECTION_REASONS,
} as const;

export type RejectionReason = keyof typeof REJECTION_REASONS;
