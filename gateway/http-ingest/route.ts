import { isDeviceId } from '../../contract/ids.js';

/** What a request on HTTP_INGEST_PORT is for: `POST /v1/devices/{id}/telemetry` or `…/status`. */
export interface IngestRoute {
  deviceId: string;
  kind: 'telemetry' | 'status';
}

const ROUTE = /^\/v1\/devices\/([^/?#]+)\/(telemetry|status)$/;

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
 * The bodies taken, by media type: each goes to the same payload parser as an MQTT payload's bytes.
 * A request without a Content-Type is taken as JSON, which is what a device posting bytes means. To
 * take another format once parse-payload reads it (CBOR), add its type here.
 */
const BODY_TYPES: ReadonlySet<string> = new Set(['application/json']);

/** The media type of a Content-Type header, if it is one the gateway takes; else undefined. */
export function acceptedBodyType(header: string | undefined): string | undefined {
  if (header === undefined || header.trim() === '') return 'application/json';
  const type = header.split(';')[0]!.trim().toLowerCase();
  return BODY_TYPES.has(type) ? type : undefined;
}
