import { type CanonicalEvent, CanonicalEvent as CanonicalEventSchema } from './event.js';

/**
 * A canonical event as a consumer gets it from `decodeCanonicalEvent`: the event and its event time
 * in epoch milliseconds, parsed once (`Date.parse(ts)`; NaN only if the engine cannot date a `ts` the
 * schema accepts).
 */
export type DecodedEvent = CanonicalEvent & { tsMs: number };

const decoder = new TextDecoder();

/**
 * Decodes one canonical event (JSON bytes or text): the event when `CanonicalEvent` (the zod schema,
 * contract/event.ts) accepts it, else undefined. One JSON.parse, no copy, and no zod for the shapes
 * the gateway writes: the parsed object is checked by hand and returned as it is (with `tsMs`). The
 * hand check only ever accepts what the schema accepts; whatever it is not sure of (another date
 * form, a `__proto__` key, a year before 100, an invalid value) goes to the schema itself, whose
 * answer stands. So the result accepts and rejects exactly what the schema does (a test compares
 * them); unlike the schema it keeps unknown keys instead of stripping them.
 */
export function decodeCanonicalEvent(input: Uint8Array | string): DecodedEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(typeof input === 'string' ? input : decoder.decode(input));
  } catch {
    return undefined;
  }
  const tsMs = fastCanonicalEventTs(value);
  if (tsMs !== undefined) {
    const event = value as DecodedEvent;
    event.tsMs = tsMs;
    return event;
  }
  const parsed = CanonicalEventSchema.safeParse(value);
  if (!parsed.success) return undefined;
  return Object.assign(parsed.data, { tsMs: Date.parse(parsed.data.ts) });
}

/**
 * The event time of a value JSON.parse made when it is, beyond doubt, a canonical event the schema
 * accepts; undefined when it is not or when only the schema can tell. Exported for the test that
 * holds it to the schema. An own `__proto__` key (JSON.parse makes one of `"__proto__":…`) is an
 * unknown key the schema strips, except as a metric name or label key, where the schema decides.
 */
export function fastCanonicalEventTs(v: unknown): number | undefined {
  if (!isObject(v)) return undefined;
  const e = v as Record<string, unknown>;
  if (typeof e.id !== 'string' || typeof e.tenant !== 'string' || typeof e.deviceId !== 'string')
    return undefined;
  const seq = e.seq;
  if (seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 0)) return undefined;
  const version = e.schemaVersion;
  if (!(Number.isSafeInteger(version) && (version as number) > 0)) return undefined;
  if (!(typeof e.receivedAt === 'string' && isoMillis(e.receivedAt) !== undefined)) return undefined;
  if (!isMetrics(e.metrics) || !isLabels(e.labels)) return undefined;
  return typeof e.ts === 'string' ? isoMillis(e.ts) : undefined;
}

/**
 * A non-array object, as zod's object and record schemas require (the record schema also wants a
 * plain prototype: JSON.parse makes no other kind).
 */
export function isObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isMetrics(v: unknown): boolean {
  if (!isObject(v)) return false;
  const metrics = v as Record<string, unknown>;
  for (const name in metrics) {
    // zod strips a `__proto__` key and JSON.parse makes it an own property: the schema decides.
    if (name === '__proto__') return false;
    const m = metrics[name];
    if (!isObject(m)) return false;
    const metric = m as Record<string, unknown>;
    // z.number() refuses NaN and ±Infinity; JSON.parse makes Infinity of 1e999.
    if (typeof metric.value !== 'number' || !Number.isFinite(metric.value)) return false;
    if (typeof metric.unit !== 'string') return false;
    if (metric.originalUnit !== undefined && typeof metric.originalUnit !== 'string') return false;
  }
  return true;
}

/** A record of strings, as z.record(z.string(), z.string()) accepts it (a `__proto__` key left to zod). */
export function isLabels(v: unknown): boolean {
  if (!isObject(v)) return false;
  const labels = v as Record<string, unknown>;
  for (const key in labels) {
    if (key === '__proto__' || typeof labels[key] !== 'string') return false;
  }
  return true;
}

const ZERO = 48;

/** Digits at s[from, from + n) as a number, or -1 when one is not an ASCII digit. */
function digits(s: string, from: number, n: number): number {
  let x = 0;
  for (let i = from; i < from + n; i++) {
    const d = s.charCodeAt(i) - ZERO;
    if (d < 0 || d > 9) return -1;
    x = x * 10 + d;
  }
  return x;
}

function daysIn(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * Epoch ms of `YYYY-MM-DDTHH:MM:SS.sssZ` (what `Date.prototype.toISOString` writes, and so the
 * gateway) when it is a date z.iso.datetime() accepts: a real calendar day (Gregorian leap years, as
 * zod's pattern has them), hours 00–23, minutes and seconds 00–59. Undefined for anything else,
 * including forms the schema would accept (no fraction, other precisions) and years before 100
 * (which Date.UTC would read as 19xx).
 */
function isoMillis(s: string): number | undefined {
  if (
    s.length !== 24 ||
    s.charCodeAt(4) !== 45 || // -
    s.charCodeAt(7) !== 45 ||
    s.charCodeAt(10) !== 84 || // T
    s.charCodeAt(13) !== 58 || // :
    s.charCodeAt(16) !== 58 ||
    s.charCodeAt(19) !== 46 || // .
    s.charCodeAt(23) !== 90 // Z
  )
    return undefined;
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  const second = digits(s, 17, 2);
  const ms = digits(s, 20, 3);
  if (year < 100 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59 || ms < 0)
    return undefined;
  return Date.UTC(year, month - 1, day, hour, minute, second, ms);
}
