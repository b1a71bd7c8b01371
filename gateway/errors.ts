import type { RejectionReason } from '../contract/rejections.js';

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
