import { JetStreamApiError } from '@nats-io/jetstream';
import { InvalidArgumentError } from '@nats-io/nats-core';

/**
 * Errors of the processors stage, each with a stable `code`. Protocol data travels in fields, not
 * only in the message.
 */

export class AlertRulesError extends Error {
  readonly code = 'ALERT_RULES_INVALID';
  constructor(
    /** The file path, or what the text was called when parsed directly. */
    readonly source: string,
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`invalid alert rules in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`, options);
    this.name = 'AlertRulesError';
  }
}

/** A reading that cannot become a line (a tag value ending in `\`, a non-finite value). */
export class PointInvalidError extends Error {
  readonly code = 'POINT_INVALID';
  constructor(
    message: string,
    readonly eventId: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'PointInvalidError';
  }
}

/** InfluxDB refused these lines for good (bad line protocol, too large, out of retention): dead-letter them. */
export class InfluxWriteRejectedError extends Error {
  readonly code = 'INFLUX_WRITE_REJECTED';
  constructor(
    readonly statusCode: number,
    /** InfluxDB's own explanation (the response body's message). */
    readonly detail: string,
    readonly lines: number,
    options?: ErrorOptions,
  ) {
    super(`InfluxDB rejected ${lines} lines with HTTP ${statusCode}: ${detail}`, options);
    this.name = 'InfluxWriteRejectedError';
  }
}

/** The writer was closed before these points were written; they were not acknowledged, so they replay. */
export class InfluxWriterClosedError extends Error {
  readonly code = 'INFLUX_WRITER_CLOSED';
  constructor(message: string) {
    super(message);
    this.name = 'InfluxWriterClosedError';
  }
}

export class InfluxWriterConfigError extends Error {
  readonly code = 'INFLUX_WRITER_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'InfluxWriterConfigError';
  }
}

/**
 * The consumer's delivery sequence jumped: messages JetStream counts as delivered never arrived (a
 * consumer leader died with them in flight). Acknowledging past them (ack policy all) would drop
 * them for good, so the partition restarts from its checkpoint instead.
 */
export class DeliveryGapError extends Error {
  readonly code = 'DELIVERY_GAP';
  constructor(
    readonly partition: number,
    /** The delivery sequence that should have come next, and the one that came. */
    readonly expected: number,
    readonly received: number,
  ) {
    super(`partition ${partition}: deliveries ${expected}–${received - 1} never arrived`);
    this.name = 'DeliveryGapError';
  }
}

/** JetStream's err_code for a message over the stream's max_msg_size (a KV bucket's max value size). */
const JS_MESSAGE_TOO_LARGE = 10054;

/**
 * A publish (a KV put) that retrying cannot fix: the message is over the server's max payload
 * (nats.js refuses it before sending) or over the stream's max message size.
 */
export function isPermanentPublishError(err: unknown): boolean {
  if (err instanceof InvalidArgumentError) return true;
  return err instanceof JetStreamApiError && err.code === JS_MESSAGE_TOO_LARGE;
}

/**
 * A lease no longer runs long enough to write for it (its renewals stopped, or it was taken): the
 * checkpoint is not saved, so that only the partition's (or role's) next owner moves it on.
 */
export class LeaseLapsedError extends Error {
  readonly code = 'LEASE_LAPSED';
  constructor(
    /** `{group}.{index}`, as in the lease's key `{group}.lease.{index}`. */
    readonly lease: string,
  ) {
    super(`the lease ${lease} has lapsed: not written`);
    this.name = 'LeaseLapsedError';
  }
}
