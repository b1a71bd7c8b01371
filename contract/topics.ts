import { isDeviceId } from './ids.js';

/**
 * The MQTT side of the device contract.
 *   devices/{deviceId}/telemetry      device → gateway, one reading or a JSON array of readings
 *   devices/{deviceId}/telemetry/cbor device → gateway, the same payloads encoded as CBOR (RFC 8949)
 *   devices/{deviceId}/status         device → gateway, birth message and last will
 *   devices/{deviceId}/commands/#     gateway → device, downlink
 */
export const DEVICE_TOPIC_ROOT = 'devices';
export const TELEMETRY_LEAF = 'telemetry' as const;
export const STATUS_LEAF = 'status' as const;
export const COMMANDS_LEAF = 'commands';

/** How a telemetry payload is encoded: the same payload schemas either way. */
export type PayloadEncoding = 'json' | 'cbor';
export const PAYLOAD_ENCODINGS: readonly PayloadEncoding[] = ['json', 'cbor'];

export type DeviceTopic =
  | { kind: 'telemetry'; deviceId: string; encoding: PayloadEncoding }
  | { kind: 'status'; deviceId: string }
  | { kind: 'commands'; deviceId: string; path: string[] }
  /** Under a valid device's root, but not a topic the contract defines. */
  | { kind: 'other'; deviceId: string };

export function telemetryTopic(deviceId: string, encoding: PayloadEncoding = 'json'): string {
  const topic = `${DEVICE_TOPIC_ROOT}/${deviceId}/${TELEMETRY_LEAF}`;
  return encoding === 'json' ? topic : `${topic}/${encoding}`;
}

export function statusTopic(deviceId: string): string {
  return `${DEVICE_TOPIC_ROOT}/${deviceId}/${STATUS_LEAF}`;
}

export function commandsTopic(deviceId: string, path: readonly string[] = []): string {
  return [DEVICE_TOPIC_ROOT, deviceId, COMMANDS_LEAF, ...path].join('/');
}

/** The subscription filter a device uses for its own downlink. */
export function commandsFilter(deviceId: string): string {
  return `${DEVICE_TOPIC_ROOT}/${deviceId}/${COMMANDS_LEAF}/#`;
}

/**
 * Parses a concrete (wildcard-free) topic. Returns undefined when the topic is not under
 * `devices/{valid id}/`, which the gateway treats as an ACL violation.
 */
export function parseDeviceTopic(topic: string): DeviceTopic | undefined {
  // [MQTT-1.5.3-2] a topic holding U+0000 is malformed: refused, so that the connection is closed.
  if (topic.includes('\u0000')) return undefined;
  const parts = topic.split('/');
  if (parts.length < 3 || parts[0] !== DEVICE_TOPIC_ROOT) return undefined;
  const deviceId = parts[1]!;
  if (!isDeviceId(deviceId)) return undefined;
  const leaf = parts[2];
  if (leaf === TELEMETRY_LEAF && parts.length === 3) return { kind: 'telemetry', deviceId, encoding: 'json' };
  if (leaf === TELEMETRY_LEAF && parts.length === 4 && parts[3] === 'cbor')
    return { kind: 'telemetry', deviceId, encoding: 'cbor' };
  if (leaf === STATUS_LEAF && parts.length === 3) return { kind: 'status', deviceId };
  if (leaf === COMMANDS_LEAF) return { kind: 'commands', deviceId, path: parts.slice(3) };
  return { kind: 'other', deviceId };
}

/**
 * Which device a subscription filter belongs to, if it stays inside that device's commands tree.
 * `devices/a/commands/#`, `devices/a/commands/+/x` and `devices/a/commands` are a's; `devices/+/…`,
 * `#`, or anything outside `commands` belong to nobody and are refused.
 */
export function commandsFilterOwner(filter: string): string | undefined {
  const parts = filter.split('/');
  if (parts.length < 3 || parts[0] !== DEVICE_TOPIC_ROOT || parts[2] !== COMMANDS_LEAF) return undefined;
  const deviceId = parts[1]!;
  return isDeviceId(deviceId) ? deviceId : undefined;
}

/**
 * A gateway device's filter for its children's downlink: `devices/+/commands/#` (or a narrower
 * `devices/+/commands/…`), what a mosquitto bridge's `topic devices/+/commands/# in 1` subscribes to.
 * The ACL grants it to gateway devices only, and each command is still forwarded to a gateway device's
 * connection only when it is for the device itself or one of its children.
 */
export function isChildrenCommandsFilter(filter: string): boolean {
  const parts = filter.split('/');
  return (
    parts.length >= 3 && parts[0] === DEVICE_TOPIC_ROOT && parts[1] === '+' && parts[2] === COMMANDS_LEAF
  );
}

/**
 * mosquitto's bridge notification topic, `$SYS/broker/connection/{name}/state`: the bridge publishes
 * `1` on it once connected and leaves `0` as its will (`notifications true`, the default). From a
 * gateway device it is the gateway device's own status. Returns whether `topic` is one.
 */
export function isBridgeStateTopic(topic: string): boolean {
  const parts = topic.split('/');
  return (
    parts.length === 5 &&
    parts[0] === '$SYS' &&
    parts[1] === 'broker' &&
    parts[2] === 'connection' &&
    parts[3]!.length > 0 &&
    !parts[3]!.includes('+') &&
    !parts[3]!.includes('#') &&
    !parts[3]!.includes('\u0000') &&
    parts[4] === 'state'
  );
}

/**
 * The HTTP side of the device contract (HTTP_INGEST_PORT): `POST /v1/devices/{deviceId}/telemetry`
 * and `…/status`, the bodies of the topics of the same names.
 */
export const INGEST_PATH_ROOT = '/v1/devices';
export type IngestKind = typeof TELEMETRY_LEAF | typeof STATUS_LEAF;

export function ingestPath(deviceId: string, kind: IngestKind = TELEMETRY_LEAF): string {
  return `${INGEST_PATH_ROOT}/${deviceId}/${kind}`;
}
