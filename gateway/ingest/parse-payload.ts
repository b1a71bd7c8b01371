import { isUtf8 } from 'node:buffer';
import { Decoder } from 'cbor-x';
import type { z } from 'zod';
import {
  type DeviceMetric,
  type DeviceReading,
  isKnownPayloadVersion,
  MAX_METRICS_PER_READING,
  PAYLOAD_VERSIONS,
  payloadVersionOf,
} from '../../contract/device-payload.js';
import { isMetricName } from '../../contract/ids.js';
import { REJECTION_REASONS, type RejectionReason } from '../../contract/rejections.js';
import type { PayloadEncoding } from '../../contract/topics.js';
import { type Rejection, reject } from '../errors.js';

/**
 * Bytes from a device's telemetry topic → typed readings, each accepted or rejected with a reason.
 * Pure and total: it never throws, whatever the bytes. JSON and CBOR carry the same payload schemas:
 * once decoded, a CBOR payload goes through exactly what its JSON twin does.
 */
export interface AcceptedReading {
  ok: true;
  /** Position in a batch; 0 for a single reading. */
  index: number;
  version: number;
  reading: DeviceReading;
}

export type RejectedReading = Rejection & { index: number | undefined };

export type ParsedReading = AcceptedReading | RejectedReading;

export interface ParsedPayload {
  batch: boolean;
  /** In payload order. A rejection with index undefined stands for the whole payload. */
  readings: ParsedReading[];
}

/** Details quote device input (a metric name, a `v`); bounded so that a dead letter stays small. */
const MAX_DETAIL_CHARS = 200;

function whole(reason: RejectionReason, detail: string): ParsedPayload {
  return { batch: false, readings: [{ ...reject(reason, detail), index: undefined }] };
}

const PATH_REASONS: Readonly<Record<string, RejectionReason>> = { ts: 'TS_INVALID', seq: 'SEQ_INVALID' };

/** The reason code of the first issue: its own `params.reason`, else one named by its path. */
export function reasonOfIssue(issue: z.core.$ZodIssue): RejectionReason {
  const own = (issue as { params?: { reason?: string } }).params?.reason;
  if (own !== undefined && Object.hasOwn(REJECTION_REASONS, own)) return own as RejectionReason;
  if ('issues' in issue && Array.isArray(issue.issues) && issue.issues.length > 0) {
    return reasonOfIssue(issue.issues[0] as z.core.$ZodIssue);
  }
  const head = issue.path[0];
  if (typeof head === 'string' && PATH_REASONS[head] !== undefined) return PATH_REASONS[head];
  if (issue.path.at(-1) === 'unit') return 'UNIT_UNKNOWN';
  return 'SCHEMA_INVALID';
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.');
  return (path ? `${path}: ${issue.message}` : issue.message).slice(0, MAX_DETAIL_CHARS);
}

/** A device's value as JSON for a detail: shortened, and never a RangeError on deep nesting. */
function quote(value: unknown): string {
  try {
    return String(JSON.stringify(value)).slice(0, MAX_DETAIL_CHARS);
  } catch {
    return 'a value nested too deep to show';
  }
}

/**
 * The reading most devices send, version 1 with numbers for `ts`, `seq` and every value, read
 * without zod; undefined for anything else, which the schema then reads (every rejection included,
 * so reasons and details are the schema's). Accepts only what PayloadV1 accepts, as the same
 * DeviceReading (test/gateway/parse-payload.test.ts checks it against the schema on generated
 * readings). zod's parse, its copy of the reading and the upcast's `Object.entries` were ~4 % of
 * the gateway's CPU per message at a fleet's shape.
 */
export function fastReadingV1(raw: Record<string, unknown>): DeviceReading | undefined {
  if ('v' in raw && raw.v !== 1) return undefined;
  const ts = raw.ts;
  if (ts !== undefined && !(typeof ts === 'number' && ts >= 0 && Number.isFinite(ts))) return undefined;
  const seq = raw.seq;
  if (seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 0)) return undefined;
  const values = raw.metrics;
  if (typeof values !== 'object' || values === null || Array.isArray(values)) return undefined;
  const metrics: DeviceMetric[] = [];
  for (const name of Object.keys(values)) {
    let value = (values as Record<string, unknown>)[name];
    if (typeof value === 'boolean') value = value ? 1 : 0;
    else if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
    if (!isMetricName(name) || metrics.length === MAX_METRICS_PER_READING) return undefined;
    metrics.push({ name, value: value as number });
  }
  if (metrics.length === 0) return undefined;
  return { ts: ts as number | undefined, seq: seq as number | undefined, metrics };
}

export function parseReading(raw: unknown, index: number): ParsedReading {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ...reject('SCHEMA_INVALID', 'a reading must be a JSON object (a CBOR map)'), index };
  }
  const fast = fastReadingV1(raw as Record<string, unknown>);
  if (fast !== undefined) return { ok: true, index, version: 1, reading: fast };
  // CBOR's own date-time (tags 0 and 1) is a `ts` in epoch milliseconds; an invalid one stays NaN.
  const ts = (raw as { ts?: unknown }).ts;
  if (ts instanceof Date) (raw as { ts?: unknown }).ts = ts.getTime();
  const version = payloadVersionOf(raw);
  if (!isKnownPayloadVersion(version)) {
    return {
      ...reject('VERSION_UNSUPPORTED', `unknown payload version ${quote(version)}`),
      index,
    };
  }
  const { schema, upcast } = PAYLOAD_VERSIONS[version];
  const result = schema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    return { ...reject(reasonOfIssue(issue), describeIssue(issue)), index };
  }
  // Each entry's schema and upcaster are typed as a pair; indexing by a union widens them apart.
  return { ok: true, index, version, reading: (upcast as (p: unknown) => DeviceReading)(result.data) };
}

/**
 * CBOR as the payload schemas read it. Maps are decoded as Maps and turned into plain objects here,
 * as JSON.parse makes them: each key an own property, `__proto__` included (cbor-x's own objects
 * would rename that key, and a reading would reach the schemas under another name than the device
 * sent). A map key that is not text has no JSON twin and is refused. No record structures are kept
 * from one payload to the next (`useRecords: false`: nothing a device sends shapes how another's
 * bytes are read). Lengths larger than the payload, truncated items and deep nesting throw.
 */
const cbor = new Decoder({ useRecords: false, mapsAsObjects: false });

class NotTextKey extends Error {}

function jsonLike(value: unknown): unknown {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = jsonLike(value[i]);
    return value;
  }
  if (!(value instanceof Map)) return value;
  const object: Record<string, unknown> = {};
  for (const [key, v] of value) {
    if (typeof key !== 'string') throw new NotTextKey(`a map key of type ${typeof key}: keys must be text`);
    Object.defineProperty(object, key, {
      value: jsonLike(v),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return object;
}

function decode(payload: Uint8Array, encoding: PayloadEncoding): { raw: unknown } | ParsedPayload {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (encoding === 'cbor') {
    try {
      return { raw: jsonLike(cbor.decode(bytes)) };
    } catch (err) {
      // Also a RangeError from absurd nesting depth, and trailing bytes after the first item.
      return whole('PAYLOAD_NOT_CBOR', (err as Error).message.slice(0, MAX_DETAIL_CHARS));
    }
  }
  if (!isUtf8(payload)) return whole('PAYLOAD_NOT_UTF8', 'payload is not valid UTF-8');
  try {
    return { raw: JSON.parse(bytes.toString('utf8')) };
  } catch (err) {
    // Also catches a RangeError from absurd nesting depth.
    return whole('PAYLOAD_NOT_JSON', (err as Error).message.slice(0, MAX_DETAIL_CHARS));
  }
}

/**
 * `maxReadings` bounds what one publish costs: past it the batch is refused whole, before any of its
 * readings is looked at.
 */
export function parseTelemetryPayload(
  payload: Uint8Array,
  maxBytes: number,
  maxReadings: number,
  encoding: PayloadEncoding = 'json',
): ParsedPayload {
  if (payload.byteLength > maxBytes) {
    return whole('PAYLOAD_TOO_LARGE', `${payload.byteLength} bytes, at most ${maxBytes} allowed`);
  }
  const decoded = decode(payload, encoding);
  if (!('raw' in decoded)) return decoded;
  const raw = decoded.raw;
  if (!Array.isArray(raw)) return { batch: false, readings: [parseReading(raw, 0)] };
  if (raw.length === 0) return whole('BATCH_EMPTY', 'empty batch');
  if (raw.length > maxReadings) {
    return whole('BATCH_TOO_LARGE', `${raw.length} readings, at most ${maxReadings} allowed in one publish`);
  }
  return { batch: true, readings: raw.map((r, i) => parseReading(r, i)) };
}
