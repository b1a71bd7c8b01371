import sparkplug from 'sparkplug-payload';
import { deviceTopic, nodeTopic, REBIRTH_METRIC } from '../../contract/sparkplug.js';
import type { EdgeNodes } from './edge-nodes.js';
import type { EdgeSession } from './edge-session.js';
import { DATATYPES, datatypeName } from './payload.js';

/**
 * Host → edge node: NCMD and DCMD messages, encoded with sparkplug-payload. Pure: the caller
 * publishes `{topic, payload}` (QoS 0, not retained [tck-id-topics-ncmd-mqtt], [tck-id-topics-dcmd-mqtt]).
 */
const codec = sparkplug.get('spBv1.0')!;

export interface SparkplugCommand {
  topic: string;
  payload: Uint8Array;
}

/** NCMD `Node Control/Rebirth` = true: the edge node publishes its NBIRTH and every DBIRTH again. */
export function rebirthCommand(groupId: string, edgeNodeId: string, nowMs: number): SparkplugCommand {
  return {
    topic: nodeTopic('NCMD', groupId, edgeNodeId),
    payload: codec.encodePayload({
      timestamp: nowMs,
      metrics: [{ name: REBIRTH_METRIC, type: 'Boolean', value: true }],
    }),
  };
}

export type CommandValue = number | boolean | string;

export type BuiltCommand = ({ ok: true } & SparkplugCommand) | { ok: false; detail: string };

/** Writes one command may carry: a DCMD is one publish, and each write is checked against the birth. */
export const MAX_WRITES_PER_COMMAND = 64;

export type ParsedWrites =
  | { ok: true; writes: Readonly<Record<string, CommandValue>> }
  | { ok: false; detail: string };

/**
 * A command's body for a Sparkplug node or device: a JSON object of metric writes, by Sparkplug or
 * contract name, `{"Outputs/Valve": true, "Setpoint": 21.5}`. Values are numbers, booleans or strings;
 * anything else is refused, as is more than MAX_WRITES_PER_COMMAND writes.
 */
export function parseMetricWrites(body: Uint8Array): ParsedWrites {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch {
    return { ok: false, detail: 'a Sparkplug command is a JSON object of metric writes' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, detail: 'a Sparkplug command is a JSON object of metric writes' };
  }
  const entries = Object.entries(raw);
  if (entries.length > MAX_WRITES_PER_COMMAND) {
    return {
      ok: false,
      detail: `${entries.length} writes, at most ${MAX_WRITES_PER_COMMAND} in one command`,
    };
  }
  // A null-prototype object: a write named `__proto__` stays a write (and is then refused as unknown).
  const writes: Record<string, CommandValue> = Object.create(null);
  for (const [name, value] of entries) {
    if (typeof value !== 'number' && typeof value !== 'boolean' && typeof value !== 'string') {
      return {
        ok: false,
        detail: `metric '${name.slice(0, 80)}': a value must be a number, a boolean or a string`,
      };
    }
    writes[name] = value;
  }
  return { ok: true, writes };
}

/** The range of each integer datatype: a command is refused rather than wrapped by the encoder. */
const INTEGER_RANGES: Readonly<Record<number, readonly [number, number]>> = {
  [DATATYPES.Int8]: [-128, 127],
  [DATATYPES.Int16]: [-32_768, 32_767],
  [DATATYPES.Int32]: [-2_147_483_648, 2_147_483_647],
  [DATATYPES.Int64]: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  [DATATYPES.UInt8]: [0, 255],
  [DATATYPES.UInt16]: [0, 65_535],
  [DATATYPES.UInt32]: [0, 4_294_967_295],
  [DATATYPES.UInt64]: [0, Number.MAX_SAFE_INTEGER],
};

function checkValue(datatype: number, value: CommandValue): string | undefined {
  const range = INTEGER_RANGES[datatype];
  if (range !== undefined) {
    return typeof value === 'number' && Number.isInteger(value) && value >= range[0] && value <= range[1]
      ? undefined
      : `an integer from ${range[0]} to ${range[1]}`;
  }
  if (datatype === DATATYPES.Float || datatype === DATATYPES.Double) {
    return typeof value === 'number' && Number.isFinite(value) ? undefined : 'a finite number';
  }
  if (datatype === DATATYPES.Boolean) return typeof value === 'boolean' ? undefined : 'true or false';
  if (datatype === DATATYPES.String || datatype === DATATYPES.Text) {
    return typeof value === 'string' ? undefined : 'a string';
  }
  return 'a datatype commands cannot write';
}

/**
 * Writes to metrics of the edge node (deviceId undefined: NCMD) or of one of its devices (DCMD),
 * named by their Sparkplug name or contract name. Each must be defined by the birth in force, and
 * each value must fit its datatype: the command carries the birth's datatype, as the edge node checks.
 */
export function metricWriteCommand(
  session: EdgeSession,
  deviceId: string | undefined,
  writes: Readonly<Record<string, CommandValue>>,
  nowMs: number,
): BuiltCommand {
  const metrics = [];
  for (const [name, value] of Object.entries(writes)) {
    const def = session.definition(deviceId, name);
    if (def === undefined) {
      return {
        ok: false,
        detail: `no metric '${name}' in the ${deviceId === undefined ? 'NBIRTH' : 'DBIRTH'} in force`,
      };
    }
    const wrong = checkValue(def.datatype, value);
    const type = datatypeName(def.datatype)!;
    if (wrong !== undefined)
      return { ok: false, detail: `metric '${name}' is ${type}: the value must be ${wrong}` };
    metrics.push({ name: def.sparkplugName, type, value });
  }
  if (metrics.length === 0) return { ok: false, detail: 'no metric to write' };
  const { groupId, edgeNodeId } = session;
  return {
    ok: true,
    topic:
      deviceId === undefined
        ? nodeTopic('NCMD', groupId, edgeNodeId)
        : deviceTopic('DCMD', groupId, edgeNodeId, deviceId),
    payload: codec.encodePayload({ timestamp: nowMs, metrics }),
  };
}

/**
 * A command from NATS for `deviceId` as Sparkplug B, or undefined when the device is neither a born
 * edge node nor a born device of one here (it then gets its commands as any device). An edge node's
 * own id gives an NCMD; a device id a DCMD through the edge node that speaks for it (`speaksFor`: the
 * registry's child relation, as for its readings). The body is metric writes (parseMetricWrites).
 */
export function sparkplugCommandFor(
  edgeNodes: Pick<EdgeNodes, 'session' | 'sessionsOfDevice'>,
  speaksFor: (edgeNodeId: string, deviceId: string) => boolean,
  tenant: string,
  deviceId: string,
  body: Uint8Array,
  nowMs: number,
): BuiltCommand | undefined {
  const node = edgeNodes.session(tenant, deviceId);
  const session =
    node?.born === true
      ? node
      : edgeNodes.sessionsOfDevice(tenant, deviceId).find((s) => speaksFor(s.edgeNodeId, deviceId));
  if (session === undefined) return undefined;
  const parsed = parseMetricWrites(body);
  if (!parsed.ok) return parsed;
  return metricWriteCommand(session, session === node ? undefined : deviceId, parsed.writes, nowMs);
}
