import { createHash } from 'node:crypto';
import type { DeviceReading } from '../../contract/device-payload.js';
import type { CanonicalEvent, CanonicalMetric } from '../../contract/event.js';
import { canonicalUnitOf, quantityOfMetric, toCanonical } from '../../contract/units.js';
import { type Rejection, reject } from '../errors.js';

/** Everything about where a reading came from that the reading itself does not say. */
export interface ReadingContext {
  tenant: string;
  deviceId: string;
  labels: Readonly<Record<string, string>>;
  receivedAtMs: number;
  /** ISO form of receivedAtMs, computed once per MQTT message rather than once per reading. */
  receivedAtIso: string;
  /**
   * The name of the MQTT publish the reading came in (PublishIds), asked for only when the reading
   * cannot be named by its content. Its retransmissions get the same name; nothing else does.
   */
  publishName: () => string;
  /** QoS 1/2: JetStream deduplicates the reading. QoS 0 is sent once and never repeated. */
  deduplicate: boolean;
  maxFutureMs: number;
  maxAgeMs: number;
}

export interface NormalisedReading {
  ok: true;
  event: CanonicalEvent;
  /** JetStream message id (dedup key); undefined when the reading cannot be told from a new one. */
  msgId: string | undefined;
}

/** ECMAScript's time value range [ECMA-262 21.4.1.1]. */
const MAX_DATE_MS = 8.64e15;

function hash(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 27);
}

/**
 * The dedup key of a reading (README, Deduplication).
 * - seq and ts sent: they name the reading; a retransmission repeats both, a rebooted device that
 *   restarts seq at 0 sends a new ts.
 * - ts sent, no seq: the reading's content, which includes its own ts.
 * - no ts: content alone would merge two equal readings sent a second apart, and seq alone those of
 *   a device that rebooted; the publish's name and the reading's place in it, which a retransmission
 *   repeats and no other publish has. Without deduplication (QoS 0) there is no key.
 */
export function messageIdOf(reading: DeviceReading, ctx: ReadingContext, index: number): string | undefined {
  const device = `${ctx.tenant}.${ctx.deviceId}`;
  if (reading.ts !== undefined && reading.seq !== undefined) return `${device}.${reading.seq}.${reading.ts}`;
  if (reading.ts !== undefined) {
    let content = '';
    for (const m of reading.metrics) content += `${m.name}=${m.value}${m.unit ?? ''};`;
    return `${device}.h.${hash(`${reading.ts}||${content}`)}`;
  }
  return ctx.deduplicate ? `${device}.p.${ctx.publishName()}.${index}` : undefined;
}

export function normaliseReading(
  reading: DeviceReading,
  version: number,
  index: number,
  ctx: ReadingContext,
): NormalisedReading | Rejection {
  const tsMs = reading.ts ?? ctx.receivedAtMs;
  if (Number.isNaN(tsMs)) return reject('TS_INVALID', 'ts is not a date');
  if (tsMs - ctx.receivedAtMs > ctx.maxFutureMs) {
    return reject('TS_IN_FUTURE', `ts is ${tsMs - ctx.receivedAtMs} ms ahead of the gateway clock`);
  }
  if (ctx.receivedAtMs - tsMs > ctx.maxAgeMs) {
    return reject('TS_TOO_OLD', `ts is ${ctx.receivedAtMs - tsMs} ms old`);
  }
  // Reachable only with bounds configured past what a Date holds; toISOString would throw.
  if (Math.abs(tsMs) > MAX_DATE_MS) return reject('TS_INVALID', 'ts is outside the range of a date');
  const metrics: Record<string, CanonicalMetric> = {};
  for (const m of reading.metrics) {
    if (m.unit === undefined) {
      const quantity = quantityOfMetric(m.name);
      metrics[m.name] = { value: m.value, unit: quantity === undefined ? '' : canonicalUnitOf(quantity) };
      continue;
    }
    const converted = toCanonical(m.name, m.value, m.unit);
    if (!converted.ok) return reject(converted.reason, converted.detail);
    metrics[m.name] =
      converted.unit === m.unit
        ? { value: converted.value, unit: converted.unit }
        : { value: converted.value, unit: converted.unit, originalUnit: m.unit };
  }
  const msgId = messageIdOf(reading, ctx, index);
  const event: CanonicalEvent = {
    id: msgId ?? `${ctx.tenant}.${ctx.deviceId}.u.${ctx.publishName()}.${index}`,
    tenant: ctx.tenant,
    deviceId: ctx.deviceId,
    ts: reading.ts === undefined ? ctx.receivedAtIso : new Date(tsMs).toISOString(),
    receivedAt: ctx.receivedAtIso,
    schemaVersion: version,
    metrics,
    labels: ctx.labels as Record<string, string>,
  };
  if (reading.seq !== undefined) event.seq = reading.seq;
  return { ok: true, event, msgId };
}
