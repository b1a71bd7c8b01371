import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  type GatewayHeartbeat,
  HEARTBEAT_MISSES,
  type OversizedStatus,
  type PresenceEvent,
  type PresenceState,
} from '../../contract/event.js';
import { presenceStateKey } from '../../contract/subjects.js';
import {
  DEFAULT_PRESENCE_MAX_CLIENT_ID_BYTES,
  DEFAULT_PRESENCE_MAX_CONNECTIONS,
  DEFAULT_PRESENCE_MAX_GATEWAYS,
  DEFAULT_PRESENCE_MAX_STATUS_BYTES,
} from '../config.js';
import type { LimitReached } from '../metrics.js';

/**
 * Device presence from connection events and gateway heartbeats, as the presence owner keeps it.
 * Pure: no I/O, time is passed in. A device is online while at least one connection is open; a
 * connection is keyed by gateway and client id, as a broker keys its sessions.
 *
 * Bounded whatever is published on PRESENCE (other gateway versions, several gateways, any NATS
 * client): a state keeps at most `maxConnections` connections (the oldest goes), a client id longer
 * than `maxClientIdBytes` is kept as its digest (so its `lost` still finds it), and a status payload
 * larger than `maxStatusBytes` as JSON is kept as its size and digest (OversizedStatus). So a state
 * never grows past presenceStateMaxBytes(), which the processor checks against NATS's max payload.
 *
 * A gateway that dies sends no `lost` events: its connections are taken as lost once its heartbeats
 * have been missing for HEARTBEAT_MISSES intervals. Each gateway's clock runs on the owner's time
 * (when a heartbeat arrived), never on the gateway's `at`, so clock skew cannot kill a gateway.
 */

/** `reason` of a device whose gateway's heartbeats stopped. */
export const GATEWAY_LOST = 'gateway_lost';
/**
 * `reason` of a device first seen through a status event: its `connected` is older than what the
 * stream holds, so whether it is online is not known; it counts as offline until it connects.
 */
export const STATUS_ONLY = 'status';

/** One flip of a device's `online`, for the `device_status` measurement. */
export interface DeviceStatusRow {
  tenant: string;
  deviceId: string;
  online: boolean;
  reason: string;
  /** The event's `at` for events, the owner's time for a gateway timeout. */
  atMs: number;
}

export interface PresenceChanges {
  /** The new state of every device whose state changed, once each. */
  states: PresenceState[];
  /** A row for every device whose `online` flipped, in the order they flipped. */
  rows: DeviceStatusRow[];
}

export interface PresenceLimits {
  /** PRESENCE_MAX_CONNECTIONS: connections kept per device. */
  maxConnections: number;
  /** PRESENCE_MAX_CLIENT_ID_BYTES: longer client ids (UTF-8) are kept as their digest. */
  maxClientIdBytes: number;
  /** PRESENCE_MAX_STATUS_BYTES: larger status payloads (as JSON) are kept as their size and digest. */
  maxStatusBytes: number;
  /** PRESENCE_MAX_GATEWAYS: gateways with no connection whose heartbeats are followed. */
  maxGateways: number;
}

export const DEFAULT_PRESENCE_LIMITS: Readonly<PresenceLimits> = Object.freeze({
  maxConnections: DEFAULT_PRESENCE_MAX_CONNECTIONS,
  maxClientIdBytes: DEFAULT_PRESENCE_MAX_CLIENT_ID_BYTES,
  maxStatusBytes: DEFAULT_PRESENCE_MAX_STATUS_BYTES,
  maxGateways: DEFAULT_PRESENCE_MAX_GATEWAYS,
});

/** Tenant, device id, reason, since, seq, the keys and braces, with room to spare. */
const STATE_OVERHEAD_BYTES = 512;
/** Gateway ids are GATEWAY_ID_PATTERN (32 bytes at most), `since`, keys and braces, with room to spare. */
const CONNECTION_OVERHEAD_BYTES = 160;
/** JSON writes a control character as `\u00XX`: six bytes for one. */
const JSON_ESCAPE_FACTOR = 6;

/** The most a PresenceState can take as JSON under these limits: it must fit NATS's max payload. */
export function presenceStateMaxBytes(limits: PresenceLimits): number {
  const connection = CONNECTION_OVERHEAD_BYTES + JSON_ESCAPE_FACTOR * limits.maxClientIdBytes;
  return STATE_OVERHEAD_BYTES + limits.maxStatusBytes + limits.maxConnections * connection;
}

export interface PresenceTrackerOptions {
  /** The interval assumed for a gateway not heard from yet. */
  defaultHeartbeatIntervalMs: number;
  /** When the tracker was created: the clock of gateways known only from restored state starts here. */
  nowMs: number;
  limits?: Partial<PresenceLimits>;
  /** Told each time a limit is hit. */
  onLimit?: LimitReached;
}

const digest = (text: string) => createHash('sha256').update(text).digest('base64url');
/** What a client id too long to keep becomes: 51 bytes, MIN_PRESENCE_MAX_CLIENT_ID_BYTES allows for it. */
const DIGEST_PREFIX = '#sha256:';

interface GatewayClock {
  expiresAtMs: number;
  intervalMs: number;
}

type Connection = PresenceState['connections'][number];

const NO_CHANGES: PresenceChanges = Object.freeze({ states: [], rows: [] }) as PresenceChanges;

class ChangeSet {
  private readonly states = new Map<string, PresenceState>();
  private readonly rows: DeviceStatusRow[] = [];

  add(key: string, prev: PresenceState | undefined, next: PresenceState, atMs: number): void {
    this.states.set(key, next);
    if ((prev?.online ?? false) !== next.online)
      this.rows.push({
        tenant: next.tenant,
        deviceId: next.deviceId,
        online: next.online,
        reason: next.reason,
        atMs,
      });
  }

  result(): PresenceChanges {
    return this.states.size === 0 ? NO_CHANGES : { states: [...this.states.values()], rows: this.rows };
  }
}

const sameConnection = (c: Connection, e: PresenceEvent) =>
  c.gateway === e.gateway && c.clientId === e.clientId;

export class PresenceTracker {
  /** States are replaced, never mutated: what a method returned stays as it was. */
  private readonly states = new Map<string, PresenceState>();
  /** Keys of the devices with at least one connection on each gateway. */
  private readonly byGateway = new Map<string, Set<string>>();
  private readonly clocks = new Map<string, GatewayClock>();
  private readonly defaultIntervalMs: number;
  private readonly createdAtMs: number;
  readonly limits: Readonly<PresenceLimits>;
  private readonly onLimit: LimitReached;

  constructor(o: PresenceTrackerOptions) {
    this.defaultIntervalMs = o.defaultHeartbeatIntervalMs;
    this.createdAtMs = o.nowMs;
    this.limits = { ...DEFAULT_PRESENCE_LIMITS, ...o.limits };
    this.onLimit = o.onLimit ?? (() => undefined);
  }

  get size(): number {
    return this.states.size;
  }

  get(tenant: string, deviceId: string): PresenceState | undefined {
    return this.states.get(presenceStateKey(tenant, deviceId));
  }

  /**
   * Loads states kept by an earlier owner. Their gateways have not been heard yet: each gets a full
   * timeout from `nowMs`, so one that died while no owner ran is still found out.
   */
  restore(states: readonly PresenceState[], nowMs = this.createdAtMs): void {
    for (const saved of states) {
      // Saved by an owner with other limits, or before there were any: held to these.
      const state = this.bounded(saved);
      const key = presenceStateKey(state.tenant, state.deviceId);
      this.put(key, this.states.get(key), state);
    }
    for (const gateway of this.byGateway.keys()) {
      if (!this.clocks.has(gateway)) this.startClock(gateway, this.defaultIntervalMs, nowMs);
    }
  }

  /**
   * Applies one presence event. With `seq` (its PRESENCE stream sequence), an event at or below the
   * sequence a device's state already holds is skipped: that is what makes replays after a crash
   * change nothing. Without it, the same event applied twice still changes nothing.
   */
  apply(received: PresenceEvent, seq?: number): PresenceChanges {
    const event = this.boundedEvent(received);
    const key = presenceStateKey(event.tenant, event.deviceId);
    const prev = this.states.get(key);
    if (seq !== undefined && prev?.seq !== undefined && seq <= prev.seq) return NO_CHANGES;
    const atMs = Date.parse(event.at);
    let next: PresenceState | undefined;
    switch (event.type) {
      case 'connected':
        next = connect(prev, event, atMs);
        break;
      case 'disconnected':
      case 'lost':
        next = disconnect(prev, event, atMs);
        break;
      case 'status':
        next = status(prev, event);
        break;
    }
    if (next === undefined) return NO_CHANGES;
    if (next.connections.length > this.limits.maxConnections) {
      // The oldest go: a connection whose `lost` never came (a gateway restarted under the same
      // id) is likelier among them, and the device is online as long as any is kept.
      const excess = next.connections.length - this.limits.maxConnections;
      next.connections = next.connections.slice(excess);
      this.onLimit('PRESENCE_MAX_CONNECTIONS', excess);
    }
    if (seq !== undefined) next.seq = seq;
    const changes = new ChangeSet();
    this.put(key, prev, next);
    changes.add(key, prev, next, atMs);
    return changes.result();
  }

  /** Records that a gateway is alive now; it changes no device. */
  heartbeat(hb: GatewayHeartbeat, nowMs: number): PresenceChanges {
    // A gateway with connections is always followed; those without are bounded in number, as any
    // NATS client can send heartbeats under as many names as it likes.
    if (
      !this.clocks.has(hb.gateway) &&
      !this.byGateway.has(hb.gateway) &&
      this.clocks.size >= this.limits.maxGateways
    ) {
      this.onLimit('PRESENCE_MAX_GATEWAYS');
      return NO_CHANGES;
    }
    this.startClock(hb.gateway, hb.intervalMs, nowMs);
    return NO_CHANGES;
  }

  /** Gateways whose heartbeats are followed now. */
  get gatewayCount(): number {
    return this.clocks.size;
  }

  /**
   * Takes the connections of every gateway whose heartbeats stopped as lost. A gateway first seen
   * in an event since the last tick starts its clock now.
   */
  tick(nowMs: number): PresenceChanges & { lostGateways: string[] } {
    const changes = new ChangeSet();
    const lostGateways: string[] = [];
    for (const [gateway, keys] of [...this.byGateway]) {
      const clock = this.clocks.get(gateway);
      if (clock === undefined) this.startClock(gateway, this.defaultIntervalMs, nowMs);
      else if (nowMs > clock.expiresAtMs) {
        this.loseGateway(gateway, keys, nowMs, changes);
        lostGateways.push(gateway);
      }
    }
    for (const [gateway, clock] of this.clocks) {
      if (nowMs > clock.expiresAtMs && !this.byGateway.has(gateway)) this.clocks.delete(gateway);
    }
    return { ...changes.result(), lostGateways };
  }

  /**
   * Gives every known gateway a full timeout from `nowMs`. For when the owner itself could not hear
   * heartbeats (its NATS connection was down, its process stalled): silence then says nothing
   * about the gateways.
   */
  restartClocks(nowMs: number): void {
    for (const clock of this.clocks.values()) {
      clock.expiresAtMs = Math.max(clock.expiresAtMs, nowMs + HEARTBEAT_MISSES * clock.intervalMs);
    }
  }

  /**
   * Drops the stream sequence from every state, for when PRESENCE was recreated: its sequences
   * start again from 1 and would otherwise be taken for events already applied.
   */
  forgetSequences(): PresenceChanges {
    const changes = new ChangeSet();
    for (const [key, prev] of [...this.states]) {
      if (prev.seq === undefined) continue;
      const { seq: _, ...next } = prev;
      this.put(key, prev, next);
      changes.add(key, prev, next, 0);
    }
    return changes.result();
  }

  /** The event with a client id and a status this tracker keeps. */
  private boundedEvent(event: PresenceEvent): PresenceEvent {
    const clientId = this.boundedClientId(event.clientId);
    const status = event.status === undefined ? undefined : this.boundedStatus(event.status);
    if (clientId === event.clientId && status === event.status) return event;
    return { ...event, clientId, status };
  }

  private bounded(state: PresenceState): PresenceState {
    let connections = state.connections.map((c) => {
      const clientId = this.boundedClientId(c.clientId);
      return clientId === c.clientId ? c : { ...c, clientId };
    });
    if (connections.length > this.limits.maxConnections) {
      this.onLimit('PRESENCE_MAX_CONNECTIONS', connections.length - this.limits.maxConnections);
      connections = connections.slice(-this.limits.maxConnections);
    }
    const status = state.status === undefined ? undefined : this.boundedStatus(state.status);
    const same =
      status === state.status &&
      connections.length === state.connections.length &&
      connections.every((c, i) => c === state.connections[i]);
    if (same) return state;
    const { status: _, ...rest } = state;
    return status === undefined ? { ...rest, connections } : { ...rest, connections, status };
  }

  private boundedClientId(clientId: string): string {
    // Cheap test first: a string of n UTF-16 units takes at most 3n bytes in UTF-8.
    if (clientId.length * 3 <= this.limits.maxClientIdBytes) return clientId;
    if (Buffer.byteLength(clientId) <= this.limits.maxClientIdBytes) return clientId;
    this.onLimit('PRESENCE_MAX_CLIENT_ID_BYTES');
    return `${DIGEST_PREFIX}${digest(clientId)}`;
  }

  private boundedStatus(status: unknown): unknown {
    const json = JSON.stringify(status);
    // Not representable as JSON (undefined inside nothing else): nothing would be kept of it anyway.
    if (json === undefined) return undefined;
    const bytes = Buffer.byteLength(json);
    if (bytes <= this.limits.maxStatusBytes) return status;
    this.onLimit('PRESENCE_MAX_STATUS_BYTES');
    const oversized: OversizedStatus = { oversized: true, bytes, sha256: digest(json) };
    return oversized;
  }

  private startClock(gateway: string, intervalMs: number, nowMs: number): void {
    this.clocks.set(gateway, { expiresAtMs: nowMs + HEARTBEAT_MISSES * intervalMs, intervalMs });
  }

  private loseGateway(gateway: string, keys: Set<string>, nowMs: number, changes: ChangeSet): void {
    const since = new Date(nowMs).toISOString();
    for (const key of [...keys]) {
      const prev = this.states.get(key)!;
      const connections = prev.connections.filter((c) => c.gateway !== gateway);
      const next: PresenceState =
        connections.length > 0
          ? { ...prev, connections }
          : { ...prev, connections, online: false, reason: GATEWAY_LOST, since };
      this.put(key, prev, next);
      changes.add(key, prev, next, nowMs);
    }
    // Forgotten, not kept dead: should it come back, its heartbeats start a new clock.
    this.clocks.delete(gateway);
  }

  private put(key: string, prev: PresenceState | undefined, next: PresenceState): void {
    for (const c of prev?.connections ?? []) {
      const keys = this.byGateway.get(c.gateway);
      keys?.delete(key);
      if (keys?.size === 0) this.byGateway.delete(c.gateway);
    }
    for (const c of next.connections) {
      let keys = this.byGateway.get(c.gateway);
      if (keys === undefined) {
        keys = new Set();
        this.byGateway.set(c.gateway, keys);
      }
      keys.add(key);
    }
    this.states.set(key, next);
  }
}

function connect(prev: PresenceState | undefined, e: PresenceEvent, atMs: number): PresenceState | undefined {
  const existing = prev?.connections.find((c) => sameConnection(c, e));
  // The same connection, or an older one of a client that has reconnected since: nothing new.
  if (existing !== undefined && Date.parse(existing.since) >= atMs) return undefined;
  // A client reconnecting on the same gateway replaces its old connection, whose `lost` may never come.
  const connections = [
    ...(prev?.connections.filter((c) => c !== existing) ?? []),
    { gateway: e.gateway, clientId: e.clientId, since: e.at },
  ];
  if (prev?.online) return { ...prev, connections };
  return {
    ...prev,
    tenant: e.tenant,
    deviceId: e.deviceId,
    online: true,
    reason: e.type,
    since: e.at,
    connections,
  };
}

function disconnect(
  prev: PresenceState | undefined,
  e: PresenceEvent,
  atMs: number,
): PresenceState | undefined {
  const existing = prev?.connections.find((c) => sameConnection(c, e));
  // Gone already, or it ends an older connection of a client that has reconnected since.
  if (prev === undefined || existing === undefined || Date.parse(existing.since) > atMs) return undefined;
  const connections = prev.connections.filter((c) => c !== existing);
  if (connections.length > 0) return { ...prev, connections };
  return { ...prev, connections, online: false, reason: e.type, since: e.at };
}

function status(prev: PresenceState | undefined, e: PresenceEvent): PresenceState | undefined {
  if (prev !== undefined)
    return isDeepStrictEqual(prev.status, e.status) ? undefined : { ...prev, status: e.status };
  return {
    tenant: e.tenant,
    deviceId: e.deviceId,
    online: false,
    reason: STATUS_ONLY,
    since: e.at,
    connections: [],
    status: e.status,
  };
}
