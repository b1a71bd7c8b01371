import { type DeviceMetric, MAX_METRICS_PER_READING, MAX_UNIT_CHARS } from '../../contract/device-payload.js';
import type { RejectionReason } from '../../contract/rejections.js';
import {
  BDSEQ_METRIC,
  NODE_CONTROL_PREFIX,
  SPARKPLUG_EDGE_LABEL,
  SPARKPLUG_GROUP_LABEL,
  SPARKPLUG_SCHEMA_VERSION,
  type SparkplugMessageType,
  type SparkplugTopic,
  sparkplugIdProblem,
  sparkplugMetricName,
} from '../../contract/sparkplug.js';
import type { GatewayConfig } from '../config.js';
import { reject } from '../errors.js';
import type { ParsedPayload, ParsedReading } from '../ingest/parse-payload.js';
import {
  aliasKey,
  COMPRESSED_UUID,
  datatypeName,
  decodeSparkplugPayload,
  has,
  isTelemetryDatatype,
  metricValue,
  type SparkplugMetric,
  type SparkplugPayload,
  uint64,
  unitOf,
} from './payload.js';

/**
 * One Sparkplug B edge node's state, fed its MQTT messages in order: which births are in force (the
 * metrics they define: names, aliases, datatypes, units), the last `seq`, the NBIRTH's `bdSeq`.
 * Each message becomes an outcome: readings in the JSON parser's shape (ParsedPayload, for
 * normaliseReading as any device's), a rejection to dead-letter, presence edges, and whether to
 * ask the edge node for a rebirth. Pure: no I/O, one injected clock (for the rebirth interval).
 *
 * The rules (README, Sparkplug B):
 * - `seq` counts 0–255 and wraps, across every message of the node but NDEATH. NBIRTH starts it; a
 *   message with any other seq than the next is refused (SPARKPLUG_SEQ_GAP), and so is everything
 *   after it (SPARKPLUG_NO_BIRTH) until an NBIRTH: a missed message may have been a DBIRTH that
 *   redefined aliases, and a reading is never read by a table that may be stale.
 * - A payload that cannot be read (SPARKPLUG_BAD_PAYLOAD, PAYLOAD_TOO_LARGE) has a seq that cannot
 *   be read either: it counts as a gap.
 * - Every refusal a rebirth can mend asks for one (NCMD `Node Control/Rebirth`), at most once per
 *   `rebirthIntervalMs`; refusals it cannot mend (an invalid id, a bound) never ask, so an edge node
 *   is not made to publish births in a loop.
 */
export interface EdgeSessionLimits {
  maxPayloadBytes: number;
  /** Metrics one NBIRTH or DBIRTH may define. */
  maxMetricsPerBirth: number;
  /** Metric definitions held for the node and all its devices together (each alias is one). */
  maxMetricsPerNode: number;
  maxDevicesPerNode: number;
  /** Rebirth requests to one edge node at most this often. */
  rebirthIntervalMs: number;
}

/** The bounds a gateway's configuration sets. */
export function edgeSessionLimits(config: GatewayConfig): EdgeSessionLimits {
  return {
    maxPayloadBytes: config.MAX_PAYLOAD_BYTES,
    maxMetricsPerBirth: config.SPARKPLUG_MAX_METRICS_PER_BIRTH,
    maxMetricsPerNode: config.SPARKPLUG_MAX_METRICS_PER_NODE,
    maxDevicesPerNode: config.SPARKPLUG_MAX_DEVICES_PER_NODE,
    rebirthIntervalMs: config.SPARKPLUG_REBIRTH_INTERVAL_MS,
  };
}

export type SparkplugLimit =
  | 'MAX_PAYLOAD_BYTES'
  | 'SPARKPLUG_MAX_METRICS_PER_BIRTH'
  | 'SPARKPLUG_MAX_METRICS_PER_NODE'
  | 'SPARKPLUG_MAX_DEVICES_PER_NODE';

/**
 * Why a metric's value is not a reading, counted rather than dead-lettered: its datatype is not
 * telemetry, it is the node's control or bdSeq, the edge node marked it transient (not to be
 * historised), its value is null, or its name was refused at birth (dead-lettered once, then).
 */
export type SkipReason = 'datatype' | 'control' | 'transient' | 'null' | 'name';

export interface SparkplugPresence {
  /** The edge node's own id, or a Sparkplug device id. */
  deviceId: string;
  online: boolean;
  cause: 'NBIRTH' | 'DBIRTH' | 'NDEATH' | 'DDEATH' | 'connection lost';
}

export interface SparkplugOutcome {
  /**
   * Whose readings these are and under which id to dead-letter: the Sparkplug device's for a device
   * message with a valid id, else the edge node's.
   */
  deviceId: string;
  /** `sparkplug_group` and `sparkplug_edge`, to add to the device's labels. */
  labels: Readonly<Record<string, string>>;
  /**
   * As parseTelemetryPayload gives it: accepted readings (index: the payload position of their first
   * metric), rejected metrics (their position), or one rejection of the whole message (index undefined).
   */
  parsed: ParsedPayload;
  /** Publish NCMD `Node Control/Rebirth` = true to the edge node (commands.ts, rebirthCommand). */
  rebirth: boolean;
  presence: SparkplugPresence[];
  skipped: Partial<Record<SkipReason, number>>;
  /** A bound this message ran into (gateway_limit_reached_total). */
  limit: SparkplugLimit | undefined;
}

/** One metric a birth defined. */
export interface MetricDefinition {
  sparkplugName: string;
  /** The contract metric name; undefined when refused. */
  name: string | undefined;
  datatype: number;
  unit: string | undefined;
  /** Why its values are not readings, if they are not. */
  skip: SkipReason | undefined;
}

interface Birth {
  byName: Map<string, MetricDefinition>;
  byAlias: Map<string, MetricDefinition>;
  /** Set when the birth was refused for a bound: its data are refused without a rebirth. */
  refused: { limit: SparkplugLimit; detail: string } | undefined;
}

type NodeState =
  /** No NBIRTH yet, or dead (NDEATH, connection lost). */
  | { phase: 'dead' }
  | { phase: 'born'; bdSeq: number | undefined; seq: number; node: Birth; devices: Map<string, Birth> }
  /** Born, then a message could not be applied in order: awaiting an NBIRTH. */
  | { phase: 'stale'; bdSeq: number | undefined; why: string; devices: Map<string, Birth> };

const SEQ_MODULUS = 256;

/** Details quote device input (names, ids); bounded so that a dead letter stays small. */
const MAX_QUOTE_CHARS = 80;
/**
 * A birth's metric names are held while it is in force, and so bounded: a node's
 * SPARKPLUG_MAX_METRICS_PER_NODE definitions measured 1.75 MB with names this long (1.0 MB at 30
 * characters). Sparkplug paths are far shorter; a longer one refuses the birth.
 */
export const MAX_SPARKPLUG_NAME_CHARS = 256;
const quote = (s: string) => JSON.stringify(s.slice(0, MAX_QUOTE_CHARS));

export class EdgeSession {
  private state: NodeState = { phase: 'dead' };
  private lastRebirthMs: number | undefined;
  readonly labels: Readonly<Record<string, string>>;

  /**
   * For one edge node: the caller has checked both ids (sparkplugIdProblem) and that the edge node
   * id is the authenticated device's own.
   */
  constructor(
    readonly groupId: string,
    readonly edgeNodeId: string,
    private readonly limits: EdgeSessionLimits,
    private readonly now: () => number,
  ) {
    this.labels = Object.freeze({ [SPARKPLUG_GROUP_LABEL]: groupId, [SPARKPLUG_EDGE_LABEL]: edgeNodeId });
  }

  /** Whether an NBIRTH is in force (for presence and tests). */
  get born(): boolean {
    return this.state.phase === 'born';
  }

  /** Whether a device's DBIRTH is in force under the node's NBIRTH in force (for its commands). */
  hasDevice(deviceId: string): boolean {
    return this.state.phase === 'born' && this.state.devices.has(deviceId);
  }

  /** Metric definitions held, node and devices together: what SPARKPLUG_MAX_METRICS_PER_NODE bounds. */
  get definitions(): number {
    if (this.state.phase !== 'born') return 0;
    let n = this.state.node.byName.size;
    for (const d of this.state.devices.values()) n += d.byName.size;
    return n;
  }

  /** A metric of the node (deviceId undefined) or of a device, by its Sparkplug or contract name. */
  definition(deviceId: string | undefined, name: string): MetricDefinition | undefined {
    if (this.state.phase !== 'born') return undefined;
    const birth = deviceId === undefined ? this.state.node : this.state.devices.get(deviceId);
    if (birth === undefined) return undefined;
    const exact = birth.byName.get(name);
    if (exact !== undefined) return exact;
    for (const def of birth.byName.values()) if (def.name === name) return def;
    return undefined;
  }

  /** One MQTT message of this edge node on a Sparkplug topic, in the order the node published them. */
  handle(topic: SparkplugTopic, payload: Uint8Array): SparkplugOutcome {
    const out = this.outcome(this.edgeNodeId);
    if (topic.kind === 'state' || topic.groupId !== this.groupId || topic.edgeNodeId !== this.edgeNodeId) {
      return this.refuse(out, 'TOPIC_UNKNOWN', 'not a topic of this edge node', false);
    }
    if (topic.type === 'NCMD' || topic.type === 'DCMD') {
      return this.refuse(
        out,
        'TOPIC_UNKNOWN',
        `${topic.type} is for the host to publish, not the edge node`,
        false,
      );
    }
    if (topic.kind === 'device') {
      const problem = sparkplugIdProblem('device', topic.deviceId);
      if (problem === undefined) out.deviceId = topic.deviceId;
    }
    if (payload.byteLength > this.limits.maxPayloadBytes) {
      out.limit = 'MAX_PAYLOAD_BYTES';
      const detail = `${payload.byteLength} bytes, at most ${this.limits.maxPayloadBytes} allowed`;
      return this.unreadable(out, topic.type, 'PAYLOAD_TOO_LARGE', detail);
    }
    const decoded = decodeSparkplugPayload(payload);
    if (!decoded.ok) return this.unreadable(out, topic.type, 'SPARKPLUG_BAD_PAYLOAD', decoded.detail);
    const message = decoded.payload;
    if (message.uuid === COMPRESSED_UUID) {
      return this.unreadable(
        out,
        topic.type,
        'SPARKPLUG_BAD_PAYLOAD',
        'compressed payloads are not supported',
      );
    }
    if (topic.type === 'NDEATH') return this.nodeDeath(out, message);
    const seq = has(message, 'seq') ? uint64(message.seq) : undefined;
    if (seq === undefined || !Number.isInteger(seq) || seq < 0 || seq >= SEQ_MODULUS) {
      const detail = `seq ${seq ?? 'missing'}, 0 to 255 required`;
      return this.unreadable(out, topic.type, 'SPARKPLUG_BAD_PAYLOAD', detail);
    }
    if (topic.type === 'NBIRTH') return this.nodeBirth(out, message, seq);
    const state = this.state;
    if (state.phase === 'dead') {
      return this.refuse(out, 'SPARKPLUG_NO_BIRTH', `${topic.type} before the edge node's NBIRTH`, true);
    }
    if (state.phase === 'stale') {
      return this.refuse(
        out,
        'SPARKPLUG_NO_BIRTH',
        `${topic.type} while awaiting a rebirth: ${state.why}`,
        true,
      );
    }
    const expected = (state.seq + 1) % SEQ_MODULUS;
    if (seq !== expected) {
      const why = `seq ${seq} where ${expected} was next`;
      this.goStale(why);
      return this.refuse(out, 'SPARKPLUG_SEQ_GAP', why, true);
    }
    state.seq = seq;
    if (topic.type === 'NDATA') return this.data(out, state.node, 'NDATA', message);
    // A device message (DBIRTH, DDATA, DDEATH): its id must be usable before anything is kept of it.
    if (topic.kind !== 'device')
      return this.refuse(out, 'TOPIC_UNKNOWN', `${topic.type} without a device`, false);
    const problem = sparkplugIdProblem('device', topic.deviceId);
    if (problem !== undefined) return this.refuse(out, 'SPARKPLUG_ID_INVALID', problem, false);
    if (topic.type === 'DBIRTH') return this.deviceBirth(out, state, topic.deviceId, message);
    const birth = state.devices.get(topic.deviceId);
    if (birth === undefined) {
      if (state.devices.size >= this.limits.maxDevicesPerNode) {
        out.limit = 'SPARKPLUG_MAX_DEVICES_PER_NODE';
        return this.refuse(out, 'SPARKPLUG_LIMIT', this.devicesDetail(), false);
      }
      return this.refuse(out, 'SPARKPLUG_NO_BIRTH', `${topic.type} before the device's DBIRTH`, true);
    }
    if (topic.type === 'DDEATH') {
      state.devices.delete(topic.deviceId);
      out.presence.push({ deviceId: topic.deviceId, online: false, cause: 'DDEATH' });
      return out;
    }
    return this.data(out, birth, 'DDATA', message);
  }

  /**
   * The edge node's connection closed without an NDEATH reaching us (no will, or it was refused):
   * the node and its devices go offline as for an NDEATH
   * [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-offline]. A host
   * that is a separate client learns of a lost connection only from the will; the broker knows.
   */
  connectionLost(): SparkplugPresence[] {
    return this.die('connection lost');
  }

  private outcome(deviceId: string): SparkplugOutcome {
    return {
      deviceId,
      labels: this.labels,
      parsed: { batch: false, readings: [] },
      rebirth: false,
      presence: [],
      skipped: {},
      limit: undefined,
    };
  }

  /** The whole message refused; a rebirth asked for when `rebirth` and the interval allows. */
  private refuse(out: SparkplugOutcome, reason: RejectionReason, detail: string, rebirth: boolean) {
    out.parsed = { batch: false, readings: [{ ...reject(reason, detail), index: undefined }] };
    out.rebirth = rebirth && this.mayAskRebirth();
    return out;
  }

  /**
   * A message whose seq cannot be read: a gap for a born node, and a rebirth asked for. An NDEATH
   * has no seq; one that cannot be read changes nothing (the connection's end will).
   */
  private unreadable(
    out: SparkplugOutcome,
    type: SparkplugMessageType,
    reason: RejectionReason,
    detail: string,
  ) {
    if (type === 'NDEATH') return this.refuse(out, reason, detail, false);
    this.goStale(detail);
    return this.refuse(out, reason, detail, true);
  }

  private mayAskRebirth(): boolean {
    const now = this.now();
    if (this.lastRebirthMs !== undefined && now - this.lastRebirthMs < this.limits.rebirthIntervalMs)
      return false;
    this.lastRebirthMs = now;
    return true;
  }

  private goStale(why: string): void {
    const state = this.state;
    if (state.phase !== 'born') return;
    // The device births are kept only to know who is online; none is read again before an NBIRTH.
    this.state = { phase: 'stale', bdSeq: state.bdSeq, why, devices: state.devices };
  }

  private die(cause: 'NDEATH' | 'connection lost'): SparkplugPresence[] {
    const state = this.state;
    if (state.phase === 'dead') return [];
    this.state = { phase: 'dead' };
    const presence: SparkplugPresence[] = [{ deviceId: this.edgeNodeId, online: false, cause }];
    for (const deviceId of state.devices.keys()) presence.push({ deviceId, online: false, cause });
    return presence;
  }

  private nodeDeath(out: SparkplugOutcome, message: SparkplugPayload): SparkplugOutcome {
    const state = this.state;
    if (state.phase === 'dead') {
      return this.refuse(out, 'SPARKPLUG_NO_BIRTH', 'NDEATH of an edge node not born', false);
    }
    const metric = message.metrics.find((m) => m.name === BDSEQ_METRIC);
    const bdSeq = metric === undefined ? undefined : bdSeqOf(metric);
    // [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline] only the
    // NDEATH of the birth in force counts; an earlier connection's will arrives late after a takeover.
    if (bdSeq !== state.bdSeq) {
      return this.refuse(
        out,
        'SPARKPLUG_BDSEQ_MISMATCH',
        `NDEATH bdSeq ${bdSeq ?? 'missing'}, the NBIRTH's is ${state.bdSeq ?? 'missing'}`,
        false,
      );
    }
    out.presence = this.die('NDEATH');
    return out;
  }

  private nodeBirth(out: SparkplugOutcome, message: SparkplugPayload, seq: number): SparkplugOutcome {
    // A new NBIRTH ends every device birth of the previous one: each device is offline until its DBIRTH.
    const wasBorn = this.state.phase !== 'dead';
    const previous = this.state.phase === 'dead' ? [] : [...this.state.devices.keys()];
    this.state = { phase: 'dead' };
    for (const deviceId of previous) out.presence.push({ deviceId, online: false, cause: 'NBIRTH' });
    // An NBIRTH refused leaves no birth in force: a node that had one is offline until the next.
    const unborn = () => {
      if (wasBorn) out.presence.push({ deviceId: this.edgeNodeId, online: false, cause: 'NBIRTH' });
      return out;
    };
    const bdSeqMetric = message.metrics.find((m) => m.name === BDSEQ_METRIC);
    const bdSeq = bdSeqMetric === undefined ? undefined : bdSeqOf(bdSeqMetric);
    if (bdSeq === undefined) {
      this.refuse(out, 'SPARKPLUG_BAD_PAYLOAD', 'NBIRTH without a bdSeq metric', true);
      return unborn();
    }
    const table = this.birth(out, message, 'NBIRTH', 0);
    if (table === undefined) return unborn();
    this.state = { phase: 'born', bdSeq, seq, node: table, devices: new Map() };
    out.presence.push({ deviceId: this.edgeNodeId, online: true, cause: 'NBIRTH' });
    return table.refused === undefined ? this.readings(out, table, message) : out;
  }

  private deviceBirth(
    out: SparkplugOutcome,
    state: Extract<NodeState, { phase: 'born' }>,
    deviceId: string,
    message: SparkplugPayload,
  ): SparkplugOutcome {
    const previous = state.devices.get(deviceId);
    if (previous === undefined && state.devices.size >= this.limits.maxDevicesPerNode) {
      out.limit = 'SPARKPLUG_MAX_DEVICES_PER_NODE';
      return this.refuse(out, 'SPARKPLUG_LIMIT', this.devicesDetail(), false);
    }
    const held = this.definitions - (previous?.byName.size ?? 0);
    state.devices.delete(deviceId);
    const table = this.birth(out, message, 'DBIRTH', held);
    if (table === undefined) {
      if (previous !== undefined) out.presence.push({ deviceId, online: false, cause: 'DBIRTH' });
      return out;
    }
    state.devices.set(deviceId, table);
    out.presence.push({ deviceId, online: true, cause: 'DBIRTH' });
    return table.refused === undefined ? this.readings(out, table, message) : out;
  }

  private devicesDetail(): string {
    return `a device new to an edge node that has ${this.limits.maxDevicesPerNode} (SPARKPLUG_MAX_DEVICES_PER_NODE)`;
  }

  /**
   * A birth's metric table; undefined when the birth is refused as unreadable (the outcome says
   * why). A birth past a bound gives a table that is `refused`, and the outcome says so.
   */
  private birth(
    out: SparkplugOutcome,
    message: SparkplugPayload,
    type: 'NBIRTH' | 'DBIRTH',
    heldElsewhere: number,
  ): Birth | undefined {
    const metrics = message.metrics;
    const table: Birth = { byName: new Map(), byAlias: new Map(), refused: undefined };
    const refuseFor = (limit: SparkplugLimit, detail: string) => {
      table.refused = { limit, detail };
      out.limit = limit;
      this.refuse(out, 'SPARKPLUG_LIMIT', detail, false);
      return table;
    };
    if (metrics.length > this.limits.maxMetricsPerBirth) {
      return refuseFor(
        'SPARKPLUG_MAX_METRICS_PER_BIRTH',
        `${type} of ${metrics.length} metrics, at most ${this.limits.maxMetricsPerBirth} allowed`,
      );
    }
    if (heldElsewhere + metrics.length > this.limits.maxMetricsPerNode) {
      return refuseFor(
        'SPARKPLUG_MAX_METRICS_PER_NODE',
        `${type} of ${metrics.length} metrics on top of ${heldElsewhere} held for the edge node, at most ${this.limits.maxMetricsPerNode} allowed`,
      );
    }
    const names = new Map<string, string>();
    const rejected: ParsedReading[] = [];
    for (const [index, m] of metrics.entries()) {
      const bad = (detail: string) => {
        this.refuse(out, 'SPARKPLUG_BAD_PAYLOAD', `${type} metric ${index}: ${detail}`, true);
        return undefined;
      };
      if (!has(m, 'name') || m.name === '') return bad('no name');
      const sparkplugName = m.name as string;
      if (sparkplugName.length > MAX_SPARKPLUG_NAME_CHARS) {
        return bad(
          `a name of ${sparkplugName.length} characters, at most ${MAX_SPARKPLUG_NAME_CHARS} allowed`,
        );
      }
      if (table.byName.has(sparkplugName)) return bad(`${quote(sparkplugName)} defined twice`);
      const datatype = m.datatype ?? 0;
      if (datatypeName(datatype) === undefined) return bad(`${quote(sparkplugName)} has no known datatype`);
      let skip: SkipReason | undefined;
      let name: string | undefined;
      if (sparkplugName === BDSEQ_METRIC || sparkplugName.startsWith(NODE_CONTROL_PREFIX)) skip = 'control';
      else if (!isTelemetryDatatype(datatype)) skip = 'datatype';
      else if (m.isTransient) skip = 'transient';
      else {
        name = sparkplugMetricName(sparkplugName);
        const first = name === undefined ? undefined : names.get(name);
        if (name === undefined || first !== undefined) {
          skip = 'name';
          rejected.push({
            ...reject(
              'METRIC_NAME_INVALID',
              name === undefined
                ? `${type} metric ${quote(sparkplugName)} has no contract name (README, Sparkplug B)`
                : `${type} metric ${quote(sparkplugName)} maps to '${name}' as ${quote(first!)} does`,
            ),
            index,
          });
          name = undefined;
        } else names.set(name, sparkplugName);
      }
      // No unit longer than MAX_UNIT_CHARS is in the table: its start is enough to refuse it
      // (UNIT_UNKNOWN), and bounds what is held.
      const unit = unitOf(m)?.slice(0, MAX_UNIT_CHARS + 1);
      const def: MetricDefinition = { sparkplugName, name, datatype, unit, skip };
      table.byName.set(sparkplugName, def);
      if (has(m, 'alias')) {
        const alias = aliasKey(m.alias as number);
        if (table.byAlias.has(alias)) return bad(`alias ${alias} used twice`);
        table.byAlias.set(alias, def);
      }
    }
    out.parsed.readings.push(...rejected);
    return table;
  }

  /** NDATA or DDATA: every metric resolved first, so that one unknown refuses the message whole. */
  private data(out: SparkplugOutcome, birth: Birth, type: 'NDATA' | 'DDATA', message: SparkplugPayload) {
    if (birth.refused !== undefined) {
      out.limit = birth.refused.limit;
      return this.refuse(
        out,
        'SPARKPLUG_LIMIT',
        `${type} of a birth refused: ${birth.refused.detail}`,
        false,
      );
    }
    return this.readings(out, birth, message);
  }

  /**
   * The metrics of a birth or data message as readings: grouped by timestamp (the metric's, else the
   * payload's, else none: the receive time), at most MAX_METRICS_PER_READING in one and each metric
   * once in one.
   */
  private readings(out: SparkplugOutcome, birth: Birth, message: SparkplugPayload): SparkplugOutcome {
    const defs: MetricDefinition[] = [];
    for (const [index, m] of message.metrics.entries()) {
      const def = has(m, 'alias')
        ? birth.byAlias.get(aliasKey(m.alias as number))
        : has(m, 'name')
          ? birth.byName.get(m.name as string)
          : undefined;
      if (def === undefined) {
        const which = has(m, 'alias')
          ? `alias ${aliasKey(m.alias as number)}`
          : has(m, 'name')
            ? `metric ${quote(m.name as string)}`
            : 'a metric with neither name nor alias';
        out.parsed.readings = [];
        return this.refuse(
          out,
          'SPARKPLUG_UNKNOWN_METRIC',
          `metric ${index}: ${which} not in its birth`,
          true,
        );
      }
      defs.push(def);
    }
    const payloadTs = has(message, 'timestamp') ? uint64(message.timestamp) : undefined;
    const groups: { index: number; ts: number | undefined; metrics: DeviceMetric[]; names: Set<string> }[] =
      [];
    const open = new Map<number | undefined, (typeof groups)[number]>();
    for (const [index, m] of message.metrics.entries()) {
      const def = defs[index]!;
      const skip = def.skip ?? (m.isTransient ? 'transient' : m.isNull ? 'null' : undefined);
      if (skip !== undefined) {
        out.skipped[skip] = (out.skipped[skip] ?? 0) + 1;
        continue;
      }
      if (has(m, 'datatype') && m.datatype !== def.datatype) {
        const sent = datatypeName(m.datatype ?? 0) ?? m.datatype;
        const detail = `metric ${quote(def.sparkplugName)} of datatype ${sent}, its birth said ${datatypeName(def.datatype)}`;
        out.parsed.readings.push({ ...reject('VALUE_INVALID', detail), index });
        continue;
      }
      const value = metricValue(def.datatype, m);
      if (!value.ok) {
        out.parsed.readings.push({
          ...reject('VALUE_INVALID', `metric ${quote(def.sparkplugName)}: ${value.detail}`),
          index,
        });
        continue;
      }
      const ts = has(m, 'timestamp') ? uint64(m.timestamp) : payloadTs;
      const name = def.name!;
      let group = open.get(ts);
      if (group === undefined || group.metrics.length >= MAX_METRICS_PER_READING || group.names.has(name)) {
        group = { index, ts, metrics: [], names: new Set() };
        groups.push(group);
        open.set(ts, group);
      }
      group.metrics.push(
        def.unit === undefined ? { name, value: value.value } : { name, value: value.value, unit: def.unit },
      );
      group.names.add(name);
    }
    for (const g of groups) {
      out.parsed.readings.push({
        ok: true,
        index: g.index,
        version: SPARKPLUG_SCHEMA_VERSION,
        reading: g.ts === undefined ? { metrics: g.metrics } : { ts: g.ts, metrics: g.metrics },
      });
    }
    out.parsed.readings.sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
    out.parsed.batch = out.parsed.readings.length > 0;
    return out;
  }
}

/** A bdSeq metric's value, whatever integer field and datatype the edge node used. */
function bdSeqOf(metric: SparkplugMetric): number | undefined {
  if (has(metric, 'longValue')) return uint64(metric.longValue);
  if (has(metric, 'intValue')) return metric.intValue as number;
  return undefined;
}
