/**
 * Stable codes. Rejection reasons are what a dead letter carries (and the `reason` label of
 * gateway_deadletters_total); each is documented in the README's table, which a test keeps in step.
 */
export const REJECTION_REASONS = {
  PAYLOAD_TOO_LARGE: 'payload larger than MAX_PAYLOAD_BYTES',
  PAYLOAD_NOT_UTF8: 'payload is not valid UTF-8',
  PAYLOAD_NOT_JSON: 'payload is not JSON',
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
} as const;

export type RejectionReason = keyof typeof REJECTION_REASONS;

export interface Rejection {
  ok: false;
  reason: RejectionReason;
  detail: string;
}

export function reject(reason: RejectionReason, detail: string): Rejection {
  return { ok: false, reason, detail };
}

/** A JetStream publish that will not be stored: the MQTT publish is then not acknowledged. */
export class NotStoredError extends Error {
  readonly code = 'NOT_STORED';
  constructor(
    message: string,
    readonly subject: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'NotStoredError';
  }
}

/** A publish or subscribe outside the device's own topics. Closes the connection (MQTT-3.3.5-2). */
export class AclDeniedError extends Error {
  readonly code = 'ACL_DENIED';
  constructor(
    readonly action: 'publish' | 'subscribe',
    readonly topic: string,
    readonly clientId: string,
  ) {
    super(`${action} on '${topic}' is not allowed for this client`);
    this.name = 'AclDeniedError';
  }
}

/** CONNECT refused. `returnCode` is the MQTT 3.1.1 CONNACK code aedes sends. */
export class AuthError extends Error {
  readonly code = 'AUTH_FAILED';
  constructor(
    readonly reason:
      | 'bad_credentials'
      | 'disabled'
      | 'client_id_rejected'
      | 'client_id_too_long'
      | 'registry_unavailable'
      | 'rate_limited'
      | 'server_busy'
      | 'connect_rate_limited',
    readonly returnCode: 2 | 3 | 4 | 5,
  ) {
    super(`connection refused: ${reason}`);
    this.name = 'AuthError';
  }
}

/** Too many secret verifications already waiting: the CONNECT is refused with "server unavailable". */
export class VerifyBusyError extends Error {
  readonly code = 'VERIFY_BUSY';
  constructor(readonly maxQueued: number) {
    super(`${maxQueued} secret verifications already waiting`);
    this.name = 'VerifyBusyError';
  }
}

/** A device far above DEVICE_MAX_MSGS_PER_SEC: the connection is closed, the publish not acknowledged. */
export class PublishRateError extends Error {
  readonly code = 'PUBLISH_RATE_EXCEEDED';
  constructor(readonly deviceId: string) {
    super(`device '${deviceId}' publishes far above its rate limit`);
    this.name = 'PublishRateError';
  }
}

/** A client past MAX_SUBSCRIPTIONS_PER_CLIENT subscriptions (held or refused): the connection is closed. */
export class SubscriptionLimitError extends Error {
  readonly code = 'SUBSCRIPTION_LIMIT';
  constructor(
    readonly limit: number,
    readonly clientId: string,
  ) {
    super(`more than ${limit} subscriptions`);
    this.name = 'SubscriptionLimitError';
  }
}

/** A connection past MAX_CONTROL_PACKETS_PER_SEC PINGREQ/SUBSCRIBE/UNSUBSCRIBE (after its burst): closed. */
export class ControlRateError extends Error {
  readonly code = 'CONTROL_RATE_EXCEEDED';
  constructor(
    readonly perSec: number,
    readonly clientId: string,
  ) {
    super(`more than ${perSec} PINGREQ/SUBSCRIBE/UNSUBSCRIBE a second`);
    this.name = 'ControlRateError';
  }
}

/**
 * A stream's byte limit JetStream cannot reserve in its store (max_file_store, or the account's
 * max_file): the gateway does not start, rather than run with that stream unbounded.
 */
export class StreamReserveError extends Error {
  readonly code = 'STREAM_RESERVE_FAILED';
  constructor(
    readonly stream: string,
    readonly maxBytes: number,
    cause: unknown,
  ) {
    super(
      `JetStream cannot reserve ${maxBytes} bytes for stream ${stream}: lower DEADLETTER_MAX_BYTES and ` +
        'PRESENCE_MAX_BYTES, or give JetStream more room (max_file_store)',
      { cause },
    );
    this.name = 'StreamReserveError';
  }
}
