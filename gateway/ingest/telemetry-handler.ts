import type { Logger } from '../../common/logger.js';
import type { GatewayRole } from '../../contract/devices.js';
import {
  DEADLETTER_DETAIL_MAX_BYTES,
  DEADLETTER_MAX_REJECTIONS,
  DEADLETTER_TOPIC_MAX_BYTES,
  type DeadLetter,
  type DeadLetterRejection,
} from '../../contract/event.js';
import type { RejectionReason } from '../../contract/rejections.js';
import { deadletterSubject, telemetrySubject } from '../../contract/subjects.js';
import type { PayloadEncoding } from '../../contract/topics.js';
import { dedupPublishesPerSession, type GatewayConfig } from '../config.js';
import { type NotStoredError, type Rejection, reject } from '../errors.js';
import type { JetStreamPublisher } from '../jetstream-publisher.js';
import { MetricNames } from '../limits/metric-names.js';
import type { GatewayMetrics } from '../metrics.js';
import { clipForJson, keptPayload } from './kept-payload.js';
import { normaliseReading, type ReadingContext } from './normalise.js';
import { type ParsedPayload, parseTelemetryPayload } from './parse-payload.js';
import { PublishIds } from './publish-ids.js';

/** Who sent a message, as authentication established it. */
export interface DeviceIdentity {
  deviceId: string;
  tenant: string;
  labels: Readonly<Record<string, string>>;
  /** telemetrySubject(tenant, deviceId), computed once per connection rather than per message. */
  subject: string;
  /** A gateway device: the devices it may speak for (contract/devices.ts isChildOf). */
  gateway?: GatewayRole;
}

export function deviceIdentity(
  deviceId: string,
  tenant: string,
  labels: Readonly<Record<string, string>>,
  gateway?: GatewayRole,
): DeviceIdentity {
  const identity: DeviceIdentity = { deviceId, tenant, labels, subject: telemetrySubject(tenant, deviceId) };
  if (gateway !== undefined) identity.gateway = gateway;
  return identity;
}

export interface IncomingPublish {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  packetId: number | undefined;
  /** The DUP flag: the client says it sends this publish again [MQTT-3.3.1-1]. */
  dup: boolean;
  clientId: string;
  /** How the payload is encoded (the topic says: `…/telemetry/cbor`; HTTP its Content-Type). */
  encoding: PayloadEncoding;
  /**
   * The publish's name when its sender gives one (an HTTP request's Idempotency-Key, hashed): a
   * repeat of it is then recognised like an MQTT retransmission. Otherwise named as MQTT's are.
   */
  name?: string;
}

/**
 * What became of each reading of one message, for a sender who can be told (HTTP; MQTT 3.1.1 has
 * only the PUBACK). Filled by `handle` before `done` is called, which then waits for every part.
 */
export interface ReadingOutcomes {
  stored: number;
  duplicates: number;
  /** In payload order; index undefined stands for the whole payload. */
  rejected: { index: number | undefined; reason: RejectionReason; detail: string }[];
  /**
   * Indexes of valid readings whose storing JetStream did not confirm before they were given up (then
   * `done` gets the error): maybe not stored, maybe stored with the confirmation lost.
   */
  unconfirmed: number[];
}

export function readingOutcomes(): ReadingOutcomes {
  return { stored: 0, duplicates: 0, rejected: [], unconfirmed: [] };
}

/** Called once: with no error when every event and dead letter of the message is stored. */
export type HandledCallback = (err?: NotStoredError) => void;

/** How often expired dedup memory and idle devices' metric names are forgotten. */
const SWEEP_INTERVAL_MS = 30_000;

interface Outgoing {
  subject: string;
  data: Uint8Array;
  msgId: string | undefined;
  event: boolean;
  /** The reading's place in its payload (events only). */
  index?: number;
}

export class TelemetryHandler {
  private qos0InFlight = 0;
  private isoMs = Number.NaN;
  private iso = '';
  private readonly ids: PublishIds;
  private readonly metricNames: MetricNames;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly publisher: JetStreamPublisher,
    private readonly config: GatewayConfig,
    private readonly metrics: GatewayMetrics,
    private readonly log: Logger,
    /** Each event and dead letter once it is stored (not a duplicate): the live summary counts them. */
    private readonly stored?: (subject: string, data: Uint8Array) => void,
  ) {
    this.ids = new PublishIds({
      ttlMs: config.DEDUP_WINDOW_MS,
      perSession: dedupPublishesPerSession(config.MAX_IN_FLIGHT_PER_CLIENT),
      maxRemembered: config.DEDUP_MAX_PUBLISHES,
      onEvicted: (n) => metrics.limitReached('DEDUP_MAX_PUBLISHES', n),
    });
    this.metricNames = new MetricNames({
      perDevice: config.DEVICE_MAX_METRICS,
      perTenant: config.TENANT_MAX_METRICS,
      ttlMs: config.METRIC_NAMES_TTL,
    });
    this.sweeper = setInterval(() => {
      this.ids.sweep();
      this.metricNames.sweep();
    }, SWEEP_INTERVAL_MS).unref();
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  /** `receivedAt` in ISO form: messages come several a millisecond, each formatting it once was not free. */
  private isoOf(ms: number): string {
    if (ms !== this.isoMs) {
      this.isoMs = ms;
      this.iso = new Date(ms).toISOString();
    }
    return this.iso;
  }

  /**
   * One MQTT publish on `devices/{id}/telemetry` → one event per valid reading on TELEMETRY, and at
   * most one dead letter on DEADLETTER listing whatever was rejected. QoS 1/2: `done` fires when all
   * are stored, and only then does the device get its PUBACK/PUBREC. QoS 0: `done` fires at once;
   * best effort. With `outcomes` (QoS 1 only), `done` waits until every part is stored or given up,
   * and `outcomes` says which.
   */
  handle(
    identity: DeviceIdentity,
    msg: IncomingPublish,
    wanted: () => boolean,
    done: HandledCallback,
    outcomes?: ReadingOutcomes,
  ): void {
    if (msg.payload.byteLength > this.config.MAX_PAYLOAD_BYTES)
      this.metrics.limitReached('MAX_PAYLOAD_BYTES');
    const parsed = parseTelemetryPayload(
      msg.payload,
      this.config.MAX_PAYLOAD_BYTES,
      this.config.MAX_READINGS_PER_PUBLISH,
      msg.encoding,
    );
    this.handleParsed(identity, msg, parsed, wanted, done, outcomes);
  }

  /**
   * As `handle`, for a payload another parser has read already (a Sparkplug B message, gateway/sparkplug):
   * normalised, bounded, deduplicated and dead-lettered as any device's.
   */
  handleParsed(
    identity: DeviceIdentity,
    msg: IncomingPublish,
    parsed: ParsedPayload,
    wanted: () => boolean,
    done: HandledCallback,
    outcomes?: ReadingOutcomes,
  ): void {
    const receivedAtMs = Date.now();
    const naming = this.naming(identity, msg);
    const ctx: ReadingContext = {
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      labels: identity.labels,
      receivedAtMs,
      receivedAtIso: this.isoOf(receivedAtMs),
      publishName: naming.name,
      deduplicate: msg.qos > 0,
      maxFutureMs: this.config.TS_MAX_FUTURE_MS,
      maxAgeMs: this.config.TS_MAX_AGE_MS,
    };
    const out: Outgoing[] = [];
    const rejected: (Rejection & { index: number | undefined })[] = [];
    for (const result of parsed.readings) {
      if (!result.ok) {
        rejected.push(result);
        continue;
      }
      const normalised = normaliseReading(result.reading, result.version, result.index, ctx);
      if (!normalised.ok) {
        rejected.push({ ...normalised, index: result.index });
        continue;
      }
      const limit = this.metricNames.admit(identity.tenant, identity.deviceId, result.reading.metrics);
      if (limit !== undefined) {
        this.metrics.limitReached(limit === 'device' ? 'DEVICE_MAX_METRICS' : 'TENANT_MAX_METRICS');
        rejected.push({ ...this.metricLimit(limit), index: result.index });
        continue;
      }
      out.push({
        subject: identity.subject,
        data: Buffer.from(JSON.stringify(normalised.event)),
        msgId: normalised.msgId,
        event: true,
        index: result.index,
      });
    }
    if (outcomes !== undefined)
      for (const r of rejected)
        outcomes.rejected.push({ index: r.index, reason: r.reason, detail: r.detail });
    if (rejected.length > 0) {
      if (rejected[0]!.reason === 'BATCH_TOO_LARGE') this.metrics.limitReached('MAX_READINGS_PER_PUBLISH');
      out.push(this.letter(identity, msg, rejected, parsed.batch ? parsed.readings.length : undefined, ctx));
    }
    this.send(out, msg, wanted, done, outcomes);
    if (msg.dup && msg.qos > 0) this.metrics.retransmission(naming.matched());
  }

  /** Dead-letters a whole message, with no reading of it looked at (a topic outside the contract). */
  rejectMessage(
    identity: DeviceIdentity,
    msg: IncomingPublish,
    rejection: Rejection,
    wanted: () => boolean,
    done: HandledCallback,
  ): void {
    const receivedAtMs = Date.now();
    const naming = this.naming(identity, msg);
    const letter = this.letter(identity, msg, [{ ...rejection, index: undefined }], undefined, {
      receivedAtIso: this.isoOf(receivedAtMs),
      publishName: naming.name,
      deduplicate: msg.qos > 0,
    });
    this.send([letter], msg, wanted, done, undefined);
    if (msg.dup && msg.qos > 0) this.metrics.retransmission(naming.matched());
  }

  /**
   * The publish's name, asked for lazily: readings that carry `ts` are named by their content and
   * need none (README, Deduplication).
   */
  private naming(identity: DeviceIdentity, msg: IncomingPublish) {
    let name: string | undefined;
    let recognised = false;
    return {
      name: () => {
        if (name !== undefined) return name;
        if (msg.name !== undefined) {
          name = msg.name;
          return name;
        }
        if (msg.qos === 0 || msg.packetId === undefined) {
          name = this.ids.fresh();
          return name;
        }
        const named = this.ids.name(
          `${identity.deviceId}\u0000${msg.clientId}`,
          msg.packetId,
          msg.dup,
          msg.topic,
          msg.payload,
        );
        recognised = named.retransmission === 'recognised';
        name = named.name;
        return name;
      },
      /** How a DUP publish was matched to the one it repeats. */
      matched: (): 'publish' | 'content' | 'none' =>
        name === undefined ? 'content' : recognised ? 'publish' : 'none',
    };
  }

  private metricLimit(limit: 'device' | 'tenant'): Rejection {
    return limit === 'device'
      ? reject(
          'METRIC_LIMIT',
          `a metric new to this device, which already uses ${this.config.DEVICE_MAX_METRICS} (DEVICE_MAX_METRICS)`,
        )
      : reject(
          'METRIC_LIMIT',
          `a metric new to this tenant, which already uses ${this.config.TENANT_MAX_METRICS} (TENANT_MAX_METRICS)`,
        );
  }

  /**
   * One dead letter for everything a message had rejected: the payload's first
   * DEADLETTER_MAX_PAYLOAD_BYTES and, for a batch, its rejected readings with their reasons. Bounded
   * whatever the device sent (README, Dead letters): a flood of letters must not fill JetStream.
   */
  private letter(
    identity: DeviceIdentity,
    msg: IncomingPublish,
    rejected: readonly (Rejection & { index: number | undefined })[],
    batchSize: number | undefined,
    ctx: Pick<ReadingContext, 'receivedAtIso' | 'publishName' | 'deduplicate'>,
  ): Outgoing {
    const first = rejected[0]!;
    for (const r of rejected) this.metrics.deadletter(r.reason);
    const kept = keptPayload(msg.payload, this.config.DEADLETTER_MAX_PAYLOAD_BYTES);
    if (kept.truncated) this.metrics.limitReached('DEADLETTER_MAX_PAYLOAD_BYTES');
    const letter: DeadLetter = {
      reason: first.reason,
      detail: clipForJson(
        batchSize === undefined || rejected.length === 1
          ? first.detail
          : `${rejected.length} of ${batchSize} readings rejected; the first: ${first.detail}`,
        DEADLETTER_DETAIL_MAX_BYTES,
      ),
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      clientId: msg.clientId,
      topic: clipForJson(msg.topic, DEADLETTER_TOPIC_MAX_BYTES),
      topicBytes: Buffer.byteLength(msg.topic),
      receivedAt: ctx.receivedAtIso,
      payload: kept.text,
      payloadEncoding: kept.encoding,
      payloadBytes: msg.payload.byteLength,
      truncated: kept.truncated,
    };
    if (batchSize !== undefined && first.index !== undefined) {
      letter.index = first.index;
      letter.readings = batchSize;
      letter.rejected = rejected.length;
      letter.rejections = listRejections(rejected, kept.keptBytes);
    }
    this.log.debug({ device: identity.deviceId, reason: first.reason, detail: letter.detail }, 'dead letter');
    return {
      subject: deadletterSubject(identity.tenant, first.reason),
      data: Buffer.from(JSON.stringify(letter)),
      msgId: ctx.deduplicate ? `dl.${identity.tenant}.${identity.deviceId}.${ctx.publishName()}` : undefined,
      event: false,
    };
  }

  /** Publishes a message's events and letter; `done` once all are stored (QoS 1/2) or at once (QoS 0). */
  private send(
    out: readonly Outgoing[],
    msg: IncomingPublish,
    wanted: () => boolean,
    done: HandledCallback,
    outcomes: ReadingOutcomes | undefined,
  ) {
    const sink =
      msg.qos === 0
        ? this.qos0Sink(out, done)
        : outcomes === undefined
          ? this.ackSink(out.length, done)
          : this.settleSink(out.length, done);
    if (sink === undefined) return;
    for (const o of out) {
      this.publisher.publish(o.subject, o.data, o.msgId, wanted, (err, duplicate) => {
        if (!err && o.event) this.metrics.event(duplicate ? 'duplicate' : 'stored');
        if (!err && !duplicate) this.stored?.(o.subject, o.data);
        if (outcomes !== undefined && o.event) {
          if (err) outcomes.unconfirmed.push(o.index!);
          else if (duplicate) outcomes.duplicates++;
          else outcomes.stored++;
        }
        sink(err);
      });
    }
  }

  /**
   * Calls `done` once every part is stored or given up, with the first failure: an answer that tells
   * the sender what was stored must not come while parts of it may still be.
   */
  private settleSink(parts: number, done: HandledCallback): HandledCallback {
    let remaining = parts;
    let first: NotStoredError | undefined;
    if (parts === 0) queueMicrotask(() => done());
    return (err) => {
      first ??= err;
      if (--remaining === 0) done(first);
    };
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

  /**
   * QoS 0 within QOS0_MAX_IN_FLIGHT unstored events, gateway-wide. An idle gateway takes any message
   * (MAX_READINGS_PER_PUBLISH bounds it): the budget is for a backlog, not for one batch.
   */
  private qos0Sink(out: readonly Outgoing[], done: HandledCallback): HandledCallback | undefined {
    done();
    const parts = out.length;
    if (this.qos0InFlight > 0 && this.qos0InFlight + parts > this.config.QOS0_MAX_IN_FLIGHT) {
      for (const o of out) if (o.event) this.metrics.event('dropped');
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

/**
 * A batch's rejected readings for its letter: the first DEADLETTER_MAX_REJECTIONS at most, and only as
 * many as fit in `budgetBytes` of JSON (the payload bytes the letter keeps; the first always). 1,000
 * readings of `1,` are 2 bytes each, and each costs ~80 bytes listed: the list must not amplify them.
 */
function listRejections(
  rejected: readonly (Rejection & { index: number | undefined })[],
  budgetBytes: number,
): DeadLetterRejection[] {
  const listed: DeadLetterRejection[] = [];
  let bytes = 2; // []
  for (const r of rejected.slice(0, DEADLETTER_MAX_REJECTIONS)) {
    const entry = {
      index: r.index!,
      reason: r.reason,
      detail: clipForJson(r.detail, DEADLETTER_DETAIL_MAX_BYTES),
    };
    bytes += Buffer.byteLength(JSON.stringify(entry)) + (listed.length > 0 ? 1 : 0);
    if (listed.length > 0 && bytes > budgetBytes) break;
    listed.push(entry);
  }
  return listed;
}
