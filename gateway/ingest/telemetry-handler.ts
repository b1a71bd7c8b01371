import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { Logger } from '../../common/logger.js';
import { DEADLETTER_PAYLOAD_MAX_BYTES, type DeadLetter } from '../../contract/event.js';
import { deadletterSubject, telemetrySubject } from '../../contract/subjects.js';
import type { GatewayConfig } from '../config.js';
import type { NotStoredError, Rejection } from '../errors.js';
import type { JetStreamPublisher } from '../jetstream-publisher.js';
import type { GatewayMetrics } from '../metrics.js';
import { normaliseReading, type ReadingContext } from './normalise.js';
import { parseTelemetryPayload } from './parse-payload.js';

/** Who sent a message, as authentication established it. */
export interface DeviceIdentity {
  deviceId: string;
  tenant: string;
  labels: Readonly<Record<string, string>>;
  /** telemetrySubject(tenant, deviceId), computed once per connection rather than per message. */
  subject: string;
}

export function deviceIdentity(
  deviceId: string,
  tenant: string,
  labels: Readonly<Record<string, string>>,
): DeviceIdentity {
  return { deviceId, tenant, labels, subject: telemetrySubject(tenant, deviceId) };
}

export interface IncomingPublish {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  packetId: number | undefined;
  clientId: string;
}

/** Called once: with no error when every event and dead letter of the message is stored. */
export type HandledCallback = (err?: NotStoredError) => void;

function shortHash(parts: string | Buffer, extra: string): string {
  return createHash('sha256').update(extra).update(parts).digest('base64url').slice(0, 27);
}

/** A batch reading as JSON; undefined when it nests too deep for JSON.stringify (a RangeError). */
function readingJson(raw: unknown): Buffer | undefined {
  try {
    return Buffer.from(JSON.stringify(raw) ?? 'null');
  } catch {
    return undefined;
  }
}

export class TelemetryHandler {
  private qos0InFlight = 0;

  constructor(
    private readonly publisher: JetStreamPublisher,
    private readonly config: GatewayConfig,
    private readonly metrics: GatewayMetrics,
    private readonly log: Logger,
  ) {}

  /**
   * One MQTT publish on `devices/{id}/telemetry` → one event per valid reading on TELEMETRY, one
   * dead letter per rejection on DEADLETTER. QoS 1/2: `done` fires when all are stored, and only
   * then does the device get its PUBACK/PUBREC. QoS 0: `done` fires at once; best effort.
   */
  handle(identity: DeviceIdentity, msg: IncomingPublish, wanted: () => boolean, done: HandledCallback): void {
    const receivedAtMs = Date.now();
    const ctx: ReadingContext = {
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      labels: identity.labels,
      receivedAtMs,
      receivedAtIso: new Date(receivedAtMs).toISOString(),
      packetId: msg.qos > 0 ? msg.packetId : undefined,
      maxFutureMs: this.config.TS_MAX_FUTURE_MS,
      maxAgeMs: this.config.TS_MAX_AGE_MS,
    };
    const parsed = parseTelemetryPayload(msg.payload, this.config.MAX_PAYLOAD_BYTES);
    if (msg.payload.byteLength > this.config.MAX_PAYLOAD_BYTES)
      this.metrics.limitReached('MAX_PAYLOAD_BYTES');
    const sink =
      msg.qos === 0
        ? this.qos0Sink(parsed.readings.length, done)
        : this.ackSink(parsed.readings.length, done);
    if (sink === undefined) return;
    for (const result of parsed.readings) {
      if (!result.ok) {
        this.deadLetter(
          identity,
          msg,
          result,
          result.index,
          parsed.batch ? result.raw : undefined,
          ctx.receivedAtIso,
          wanted,
          sink,
        );
        continue;
      }
      const normalised = normaliseReading(result.reading, result.version, result.index, ctx);
      if (!normalised.ok) {
        this.deadLetter(identity, msg, normalised, result.index, undefined, ctx.receivedAtIso, wanted, sink);
        continue;
      }
      this.publisher.publish(
        identity.subject,
        Buffer.from(JSON.stringify(normalised.event)),
        normalised.msgId,
        wanted,
        (err, duplicate) => {
          if (!err) this.metrics.event(duplicate ? 'duplicate' : 'stored');
          sink(err);
        },
      );
    }
  }

  /** Publishes a dead letter for a whole message (index undefined) or for one reading of it. */
  deadLetter(
    identity: DeviceIdentity,
    msg: IncomingPublish,
    rejection: Rejection,
    index: number | undefined,
    raw: unknown,
    receivedAtIso: string,
    wanted: () => boolean,
    done: HandledCallback,
  ): void {
    this.metrics.deadletter(rejection.reason);
    // A reading the schema rejected is shown alone, unless it nests too deep to serialise; otherwise the
    // letter holds the whole payload.
    const reading = raw !== undefined ? readingJson(raw) : undefined;
    const bytes = reading ?? msg.payload;
    const kept = bytes.subarray(0, DEADLETTER_PAYLOAD_MAX_BYTES);
    const utf8 = isUtf8(kept);
    const letter: DeadLetter = {
      reason: rejection.reason,
      detail: rejection.detail,
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      clientId: msg.clientId,
      topic: msg.topic,
      receivedAt: receivedAtIso,
      payload: kept.toString(utf8 ? 'utf8' : 'base64'),
      payloadEncoding: utf8 ? 'utf8' : 'base64',
      payloadBytes: bytes.byteLength,
      truncated: kept.byteLength < bytes.byteLength,
    };
    if (index !== undefined) letter.index = index;
    this.log.debug(
      { device: identity.deviceId, reason: rejection.reason, detail: rejection.detail },
      'dead letter',
    );
    const msgId =
      msg.packetId !== undefined && msg.qos > 0
        ? `dl.${identity.tenant}.${identity.deviceId}.${shortHash(msg.payload, `${msg.packetId}|${index ?? ''}|`)}`
        : undefined;
    this.publisher.publish(
      deadletterSubject(identity.tenant, rejection.reason),
      Buffer.from(JSON.stringify(letter)),
      msgId,
      wanted,
      (err) => done(err),
    );
  }

  /** Counts down the stored parts of one message and calls `done` once, on the first failure or at 0. */
  private ackSink(parts: number, done: HandledCallback): HandledCallback {
    let remaining = parts;
    let finished = false;
    return (err) => {
      if (finished) return;
      if (err || --remaining === 0) {
        finished = true;
        done(err);
      }
    };
  }

  private qos0Sink(parts: number, done: HandledCallback): HandledCallback | undefined {
    done();
    if (this.qos0InFlight + parts > this.config.QOS0_MAX_IN_FLIGHT) {
      for (let i = 0; i < parts; i++) this.metrics.event('dropped');
      this.metrics.limitReached('QOS0_MAX_IN_FLIGHT');
      return undefined;
    }
    this.qos0InFlight += parts;
    return (err) => {
      this.qos0InFlight--;
      if (err) this.log.debug({ err: err.message }, 'QoS 0 reading not stored');
    };
  }
}
