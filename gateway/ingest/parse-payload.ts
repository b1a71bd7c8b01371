import { isUtf8 } from 'node:buffer';
import type { z } from 'zod';
import {
  type DeviceReading,
  isKnownPayloadVersion,
  PAYLOAD_VERSIONS,
  payloadVersionOf,
} from '../../contract/device-payload.js';
import { REJECTION_REASONS, type RejectionReason } from '../../contract/rejections.js';
import { type Rejection, reject } from '../errors.js';

/**
 * Bytes from a device's telemetry topic → typed readings, each accepted or rejected with a reason.
 * Pure and total: it never throws, whatever the bytes.
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

export function parseReading(raw: unknown, index: number): ParsedReading {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ...reject('SCHEMA_INVALID', 'a reading must be a JSON object'), index };
  }
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
 * `maxReadings` bounds what one publish costs: past it the batch is refused whole, before any of its
 * readings is looked at.
 */
export function parseTelemetryPayload(
  payload: Uint8Array,
  maxBytes: number,
  maxReadings: number,
): ParsedPayload {
  if (payload.byteLength > maxBytes) {
    return whole('PAYLOAD_TOO_LARGE', `${payload.byteLength} bytes, at most ${maxBytes} allowed`);
  }
  if (!isUtf8(payload)) return whole('PAYLOAD_NOT_UTF8', 'payload is not valid UTF-8');
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    // Also catches a RangeError from absurd nesting depth.
    return whole('PAYLOAD_NOT_JSON', (err as Error).message.slice(0, MAX_DETAIL_CHARS));
  }
  if (!Array.isArray(raw)) return { batch: false, readings: [parseReading(raw, 0)] };
  if (raw.length === 0) return whole('BATCH_EMPTY', 'empty batch');
  if (raw.length > maxReadings) {
    return whole('BATCH_TOO_LARGE', `${raw.length} readings, at most ${maxReadings} allowed in one publish`);
  }
  return { batch: true, readings: raw.map((r, i) => parseReading(r, i)) };
}
