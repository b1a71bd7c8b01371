import type { Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { DEFAULT_TENANT } from '../../contract/ids.js';
import { type DeviceIdentity, deviceIdentity } from '../ingest/telemetry-handler.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PresencePublisher } from '../presence.js';
import { sentDisconnect } from './aedes-internals.js';

/** What the broker keeps per accepted connection. In open mode a client's device is bound by the first device topic it uses. */
export interface ConnectionState {
  identity: DeviceIdentity | undefined;
  lostReason: string | undefined;
  /** Filters granted and still held, and the number refused: both count against MAX_SUBSCRIPTIONS_PER_CLIENT. */
  subscriptions: Set<string>;
  refusedSubscriptions: number;
  /** Publishes handed to the ingest or waiting for a rate token, not yet answered. */
  inFlight: number;
  /** Reading paused because inFlight reached MAX_IN_FLIGHT_PER_CLIENT. */
  paused: boolean;
  /** A gateway device's children seen on this connection: online through it, offline with it. */
  children: Map<string, DeviceIdentity> | undefined;
}

/** `lost` reason of a connection closed because its client id connected at another gateway. */
export const TAKEN_OVER = 'taken over';

export function newConnectionState(identity: DeviceIdentity | undefined): ConnectionState {
  return {
    identity,
    lostReason: undefined,
    subscriptions: new Set(),
    refusedSubscriptions: 0,
    inFlight: 0,
    paused: false,
    children: undefined,
  };
}

/** What connection tracking needs of a client (an aedes Client; a plain object in unit tests). */
export type TrackedClient = Pick<Client, 'id' | 'closed' | 'close'>;

export interface ConnectionsDeps {
  /** MAX_CONNECTIONS_PER_DEVICE. */
  maxPerDevice: number;
  /** AUTH_MODE=open: clients are bound to a device by the first device topic they use. */
  openMode: boolean;
  presence: Pick<PresencePublisher, 'publish'>;
  metrics: Pick<GatewayMetrics, 'limitReached'>;
  log: Logger;
}

/**
 * The connections of each device on this gateway: their state, their presence (`connected` when
 * bound to a device, `disconnected` or `lost` with its reason when gone), and the bound on how many a
 * device holds at once.
 */
export class Connections {
  private readonly states = new WeakMap<TrackedClient, ConnectionState>();
  private readonly byDevice = new Map<string, Set<TrackedClient>>();
  /** Connections past their CONNACK by client id (aedes itself keeps one per id: a new one closes the old). */
  private readonly byClientId = new Map<string, TrackedClient>();
  /** Children online through a gateway device's connections here. */
  private readonly viaGateway = new Map<string, Set<TrackedClient>>();

  constructor(private readonly deps: ConnectionsDeps) {}

  /** An authenticated connection: its identity (undefined for an open-mode client not yet bound). */
  accepted(client: TrackedClient, identity: DeviceIdentity | undefined): void {
    this.states.set(client, newConnectionState(identity));
  }

  /** The connection's state, once it has authenticated. */
  state(client: TrackedClient): ConnectionState | undefined {
    return this.states.get(client);
  }

  /** The client's identity, binding it to `deviceId` first if it is an open-mode client not yet bound. */
  identityFor(client: TrackedClient, deviceId: string | undefined): DeviceIdentity | undefined {
    const state = this.states.get(client);
    if (state === undefined) return undefined;
    if (state.identity === undefined && this.deps.openMode && deviceId !== undefined) {
      state.identity = deviceIdentity(deviceId, DEFAULT_TENANT, {});
      this.bind(client, state.identity);
    }
    return state.identity;
  }

  /** Why the connection is going away, as its `lost` event will say; the first reason given wins. */
  markLost(client: TrackedClient, reason: string): void {
    const state = this.states.get(client);
    if (state && state.lostReason === undefined) state.lostReason = reason;
  }

  /** aedes' `clientReady`: the CONNACK went out. */
  ready(client: TrackedClient): void {
    this.byClientId.set(client.id, client);
    const identity = this.states.get(client)?.identity;
    if (identity !== undefined) this.bind(client, identity); // else: open-mode client, bound on first use
  }

  /**
   * A gateway device published for a child on this connection: the child is online through it
   * (`connected`, under the gateway device's client id) until the connection goes.
   */
  childSeen(client: TrackedClient, child: DeviceIdentity): void {
    const state = this.states.get(client);
    if (state === undefined || client.closed || state.children?.has(child.deviceId)) return;
    state.children ??= new Map();
    state.children.set(child.deviceId, child);
    let set = this.viaGateway.get(child.deviceId);
    if (set === undefined) {
      set = new Set();
      this.viaGateway.set(child.deviceId, set);
    }
    set.add(client);
    this.deps.presence.publish({
      tenant: child.tenant,
      deviceId: child.deviceId,
      clientId: client.id,
      type: 'connected',
    });
  }

  /**
   * A child seen on this connection went offline while the connection stays (a Sparkplug DDEATH, or
   * its edge node's NDEATH or new NBIRTH): `disconnected`, with why. A child not online through this
   * connection changes nothing.
   */
  childGone(client: TrackedClient, deviceId: string, reason: string): void {
    const state = this.states.get(client);
    const child = state?.children?.get(deviceId);
    if (child === undefined) return;
    state!.children!.delete(deviceId);
    const via = this.viaGateway.get(deviceId);
    via?.delete(client);
    if (via?.size === 0) this.viaGateway.delete(deviceId);
    this.deps.presence.publish({
      tenant: child.tenant,
      deviceId,
      clientId: client.id,
      type: 'disconnected',
      reason,
    });
  }

  /** aedes' `clientDisconnect`. */
  disconnected(client: TrackedClient): void {
    if (this.byClientId.get(client.id) === client) this.byClientId.delete(client.id);
    const state = this.states.get(client);
    const identity = state?.identity;
    if (identity === undefined) return;
    const set = this.byDevice.get(identity.deviceId);
    set?.delete(client);
    if (set?.size === 0) this.byDevice.delete(identity.deviceId);
    const clean = sentDisconnect(client as Client);
    const gone = (device: DeviceIdentity) =>
      this.deps.presence.publish({
        tenant: device.tenant,
        deviceId: device.deviceId,
        clientId: client.id,
        type: clean ? 'disconnected' : 'lost',
        ...(clean ? {} : { reason: state?.lostReason ?? 'connection closed' }),
      });
    gone(identity);
    // Its children were online through this connection only: they go with it.
    for (const child of state?.children?.values() ?? []) {
      const via = this.viaGateway.get(child.deviceId);
      via?.delete(client);
      if (via?.size === 0) this.viaGateway.delete(child.deviceId);
      gone(child);
    }
  }

  /** Closes every connection of a device (disabled, removed or rotated in the registry). */
  disconnectDevice(deviceId: string, why: string): number {
    // A copy: aedes may report a close at once, which takes the client out of the device's set.
    const clients = [...(this.byDevice.get(deviceId) ?? [])];
    if (clients.length === 0) return 0;
    for (const client of clients) {
      this.markLost(client, why);
      client.close();
    }
    this.deps.log.info({ device: deviceId, why, connections: clients.length }, 'device disconnected');
    return clients.length;
  }

  /**
   * Another gateway accepted a connection under this client id: the one here, if any, is closed
   * [MQTT-3.1.4-2] (`lost`, reason `taken over`). True when there was one.
   */
  takeOver(clientId: string, by: string): boolean {
    const client = this.byClientId.get(clientId);
    if (client === undefined || client.closed) return false;
    this.markLost(client, TAKEN_OVER);
    client.close();
    this.deps.log.info({ clientId, by }, 'client id connected at another gateway: connection here closed');
    return true;
  }

  /** Connected here, directly or as a child through a gateway device's connection. */
  isOnline(deviceId: string): boolean {
    return (this.byDevice.get(deviceId)?.size ?? 0) > 0 || (this.viaGateway.get(deviceId)?.size ?? 0) > 0;
  }

  private bind(client: TrackedClient, identity: DeviceIdentity): void {
    this.track(client, identity.deviceId);
    this.deps.presence.publish({
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      clientId: client.id,
      type: 'connected',
    });
  }

  /**
   * Adds a device's connection, closing its oldest ones past MAX_CONNECTIONS_PER_DEVICE. The oldest,
   * not the new one: a device whose network dropped reconnects before the gateway notices, and must
   * not be locked out by its own dead connections.
   */
  private track(client: TrackedClient, deviceId: string): void {
    let set = this.byDevice.get(deviceId);
    if (!set) {
      set = new Set();
      this.byDevice.set(deviceId, set);
    }
    const max = this.deps.maxPerDevice;
    let open = 0;
    for (const c of set) if (!c.closed) open++;
    for (const oldest of set) {
      if (open < max) break;
      if (oldest.closed) continue;
      open--;
      this.deps.metrics.limitReached('MAX_CONNECTIONS_PER_DEVICE');
      this.deps.log.warn(
        { device: deviceId, clientId: oldest.id, limit: max },
        'too many connections for one device: closing its oldest',
      );
      this.markLost(oldest, 'connection limit');
      oldest.close();
    }
    set.add(client);
  }
}
