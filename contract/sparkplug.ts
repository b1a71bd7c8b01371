import { isDeviceId, isMetricName, LABEL_VALUE_MAX_CHARS } from './ids.js';

/**
 * The Sparkplug B side of the device contract (Eclipse Sparkplug 3.0, chapter 4 "Topics").
 *
 *   spBv1.0/{group}/{NBIRTH|NDEATH|NDATA|NCMD}/{edgeNode}
 *   spBv1.0/{group}/{DBIRTH|DDEATH|DDATA|DCMD}/{edgeNode}/{device}
 *   spBv1.0/STATE/{hostId}                                   host application state (3.0)
 *
 * An edge node is a registry device: `{edgeNode}` is its device id, and its node metrics are stored
 * under it. A Sparkplug device's readings are stored under the Sparkplug device id itself, which must
 * therefore satisfy the device-id grammar (contract/ids.ts). Both carry the labels `sparkplug_group`
 * and `sparkplug_edge`.
 */
export const SPARKPLUG_NAMESPACE = 'spBv1.0';
export const SPARKPLUG_STATE = 'STATE';

export const SPARKPLUG_NODE_TYPES = ['NBIRTH', 'NDEATH', 'NDATA', 'NCMD'] as const;
export const SPARKPLUG_DEVICE_TYPES = ['DBIRTH', 'DDEATH', 'DDATA', 'DCMD'] as const;
export type SparkplugNodeType = (typeof SPARKPLUG_NODE_TYPES)[number];
export type SparkplugDeviceType = (typeof SPARKPLUG_DEVICE_TYPES)[number];
export type SparkplugMessageType = SparkplugNodeType | SparkplugDeviceType;

/**
 * The canonical event's `schemaVersion` of a Sparkplug reading: it has the shape of a version 2 JSON
 * reading (each value with its unit, when the birth gave one), and is normalised as one.
 */
export const SPARKPLUG_SCHEMA_VERSION = 2;

/** Label keys the gateway adds to every event of an edge node and of its devices. */
export const SPARKPLUG_GROUP_LABEL = 'sparkplug_group';
export const SPARKPLUG_EDGE_LABEL = 'sparkplug_edge';

/** The metric every NBIRTH and NDEATH carries, the birth/death sequence [tck-id-topics-nbirth-bdseq-included]. */
export const BDSEQ_METRIC = 'bdSeq';
/**
 * The NCMD metric a host writes `true` to for a new NBIRTH and DBIRTHs
 * [tck-id-operational-behavior-data-commands-ncmd-rebirth-name],
 * [tck-id-operational-behavior-data-commands-ncmd-rebirth-value].
 */
export const REBIRTH_METRIC = 'Node Control/Rebirth';
/** Metrics in this folder are the edge node's controls (Rebirth, Reboot, Next Server…), not telemetry. */
export const NODE_CONTROL_PREFIX = 'Node Control/';

export type SparkplugTopic =
  | { kind: 'node'; type: SparkplugNodeType; groupId: string; edgeNodeId: string }
  | { kind: 'device'; type: SparkplugDeviceType; groupId: string; edgeNodeId: string; deviceId: string }
  | { kind: 'state'; hostId: string };

function isNodeType(type: string): type is SparkplugNodeType {
  return (SPARKPLUG_NODE_TYPES as readonly string[]).includes(type);
}

function isDeviceType(type: string): type is SparkplugDeviceType {
  return (SPARKPLUG_DEVICE_TYPES as readonly string[]).includes(type);
}

/**
 * The parts of a concrete Sparkplug topic, or undefined when it is not one: another namespace, an
 * unknown message type, the wrong number of levels, or an empty id. The ids are returned as they
 * are; whether they may be used is `sparkplugIdProblem`'s question.
 */
export function parseSparkplugTopic(topic: string): SparkplugTopic | undefined {
  // [MQTT-1.5.3-2] a topic holding U+0000 is malformed.
  if (topic.includes('\u0000')) return undefined;
  const parts = topic.split('/');
  if (parts[0] !== SPARKPLUG_NAMESPACE || parts.some((p) => p === '')) return undefined;
  if (parts.length === 3 && parts[1] === SPARKPLUG_STATE) return { kind: 'state', hostId: parts[2]! };
  const [, groupId, type, edgeNodeId, deviceId] = parts as [string, string, string, string, string?];
  if (parts.length === 4 && isNodeType(type)) return { kind: 'node', type, groupId, edgeNodeId };
  if (parts.length === 5 && isDeviceType(type) && deviceId !== undefined) {
    return { kind: 'device', type, groupId, edgeNodeId, deviceId };
  }
  return undefined;
}

export function nodeTopic(type: SparkplugNodeType, groupId: string, edgeNodeId: string): string {
  return `${SPARKPLUG_NAMESPACE}/${groupId}/${type}/${edgeNodeId}`;
}

export function deviceTopic(
  type: SparkplugDeviceType,
  groupId: string,
  edgeNodeId: string,
  deviceId: string,
): string {
  return `${SPARKPLUG_NAMESPACE}/${groupId}/${type}/${edgeNodeId}/${deviceId}`;
}

/**
 * Why a Sparkplug id cannot be used, or undefined when it can.
 * - group id: becomes the `sparkplug_group` label value; 1–128 characters, no control characters
 *   (the spec already forbids `/`, `+` and `#` [tck-id-topic-structure-namespace-valid-group-id]).
 * - edge node and device ids: become canonical device ids, so the device-id grammar applies as it
 *   is, `[A-Za-z0-9_-]{1,64}`. They are not rewritten: two Sparkplug ids would otherwise meet in one.
 */
export function sparkplugIdProblem(kind: 'group' | 'edge' | 'device', id: string): string | undefined {
  if (kind === 'group') {
    if (id.length === 0 || id.length > LABEL_VALUE_MAX_CHARS) {
      return `group id of ${id.length} characters, 1 to ${LABEL_VALUE_MAX_CHARS} allowed`;
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    return /[\u0000-\u001f\u007f]/.test(id) ? 'group id holds a control character' : undefined;
  }
  return isDeviceId(id) ? undefined : `${kind} id '${id.slice(0, 80)}' is outside [A-Za-z0-9_-]{1,64}`;
}

/**
 * A Sparkplug metric name as a contract metric name (`[A-Za-z0-9_.-]{1,64}`, contract/ids.ts):
 * - `/` (Sparkplug's folder separator) becomes `.`: `Inputs/Temperature` → `Inputs.Temperature`;
 * - a space becomes `_`: `Hardware Make` → `Hardware_Make`;
 * - `A–Z a–z 0–9 _ . -` stay as they are;
 * - refused (undefined): any other character (`°`, `:`, `(`, non-ASCII letters…), an empty folder
 *   (`a//b`, a leading or trailing `/`), a result longer than 64 characters or a reserved name
 *   (`__proto__`, `constructor`, `prototype`). Nothing is guessed or dropped from a name.
 * Two Sparkplug names can map to one (`a/b` and `a.b`): a device's birth keeps the first of them.
 */
export function sparkplugMetricName(name: string): string | undefined {
  if (name.length === 0 || name.length > 64) return undefined;
  if (name.startsWith('/') || name.endsWith('/') || name.includes('//')) return undefined;
  const mapped = name.replaceAll('/', '.').replaceAll(' ', '_');
  return isMetricName(mapped) ? mapped : undefined;
}

/**
 * The edge node whose commands a subscription filter asks for, or undefined when it is not such a
 * filter: `spBv1.0/{group}/NCMD/{edge}` or `…/DCMD/{edge}`, alone or followed by `/#`, `/+` or one
 * device id, with the group and edge node given (no wildcard there). What `sparkplug-client`
 * subscribes to: `spBv1.0/{group}/NCMD/{edge}/#` and `spBv1.0/{group}/DCMD/{edge}/#`.
 */
export function sparkplugCommandsFilterOwner(filter: string): string | undefined {
  const parts = filter.split('/');
  if (parts.length < 4 || parts.length > 5 || parts[0] !== SPARKPLUG_NAMESPACE) return undefined;
  const [, groupId, type, edgeNodeId, rest] = parts as [string, string, string, string, string?];
  if (type !== 'NCMD' && type !== 'DCMD') return undefined;
  const literal = (s: string) => s !== '' && !s.includes('+') && !s.includes('#');
  if (!literal(groupId) || !literal(edgeNodeId)) return undefined;
  if (rest !== undefined && rest !== '#' && rest !== '+' && !literal(rest)) return undefined;
  return edgeNodeId;
}

/** The topic a host application's state is published on (Sparkplug 3.0), retained. */
export function sparkplugStateTopic(hostId: string): string {
  return `${SPARKPLUG_NAMESPACE}/${SPARKPLUG_STATE}/${hostId}`;
}

/** A host application's STATE payload (Sparkplug 3.0): UTF-8 JSON, `online` and when it became so. */
export function sparkplugStatePayload(online: boolean, timestampMs: number): string {
  return JSON.stringify({ online, timestamp: timestampMs });
}

/** `spBv1.0/STATE/{hostId}`, a host application's state (Sparkplug 3.0), with the host id given. */
export function isSparkplugStateFilter(filter: string): boolean {
  const parts = filter.split('/');
  return (
    parts.length === 3 &&
    parts[0] === SPARKPLUG_NAMESPACE &&
    parts[1] === SPARKPLUG_STATE &&
    parts[2] !== '' &&
    !parts[2]!.includes('+') &&
    !parts[2]!.includes('#')
  );
}
