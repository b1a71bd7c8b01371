import { isDeviceId } from '../../contract/ids.js';
import {
  INGEST_PATH_ROOT,
  type IngestKind,
  type PayloadEncoding,
  STATUS_LEAF,
  TELEMETRY_LEAF,
} from '../../contract/topics.js';

/** What a request on HTTP_INGEST_PORT is for: `POST /v1/devices/{id}/telemetry` or `…/status`. */
export interface IngestRoute {
  deviceId: string;
  kind: IngestKind;
}

/** contract/topics.ts ingestPath, read back: the device id may come percent-encoded. */
const ROUTE = new RegExp(`^${INGEST_PATH_ROOT}/([^/?#]+)/(${TELEMETRY_LEAF}|${STATUS_LEAF})$`);

/** The route of a request path (query ignored), or undefined for a path that is none. */
export function parseRoute(url: string | undefined): IngestRoute | undefined {
  const path = (url ?? '/').split('?')[0]!;
  const match = ROUTE.exec(path);
  if (match === null) return undefined;
  let deviceId: string;
  try {
    deviceId = decodeURIComponent(match[1]!);
  } catch {
    return undefined;
  }
  return isDeviceId(deviceId) ? { deviceId, kind: match[2] as IngestRoute['kind'] } : undefined;
}

/**
 * The bodies taken, by media type, and how each is encoded: each goes to the same payload parser as
 * an MQTT payload's bytes (`application/cbor` as those of `…/telemetry/cbor`). A request without a
 * Content-Type is taken as JSON, which is what a device posting bytes means.
 */
const BODY_TYPES: ReadonlyMap<string, PayloadEncoding> = new Map([
  ['application/json', 'json'],
  ['application/cbor', 'cbor'],
]);

/** How a body of this Content-Type is encoded, if it is one the gateway takes; else undefined. */
export function bodyEncoding(header: string | undefined): PayloadEncoding | undefined {
  if (header === undefined || header.trim() === '') return 'json';
  return BODY_TYPES.get(header.split(';')[0]!.trim().toLowerCase());
}
