import memory from 'aedes-persistence';
import {
  isSparkplugStateFilter,
  parseSparkplugTopic,
  sparkplugCommandsFilterOwner,
} from '../../contract/sparkplug.js';
import { commandsFilterOwner, isChildrenCommandsFilter, parseDeviceTopic } from '../../contract/topics.js';

/**
 * aedes' in-memory persistence, bounded. What a device that is away can make the gateway hold is its
 * persistent session (`clean: false`): subscriptions, commands queued for it, QoS 2 publishes waiting
 * for PUBREL. aedes-persistence bounds none of them. This wraps it:
 *
 * - MAX_QUEUED_MESSAGES: commands queued for a session while its client is away; past it new ones
 *   are dropped (as mosquitto's max_queued_messages does), so what was promised `queued` stays.
 *   While its client is connected the same queue holds what was sent and not yet acknowledged
 *   (aedes keeps it for [MQTT-4.4.0-1], to send again on a reconnect); a device that reads its
 *   commands and never sends PUBACK grew it by every command for as long as it stayed connected.
 *   Past the bound a command is not sent to it (`backlogged`); the connection stays.
 * - SESSION_EXPIRY_MS: a session away this long is forgotten, queue and all (mosquitto's
 *   persistent_client_expiration). A device back in time resumes it.
 * - MAX_SESSIONS_PER_DEVICE: a device may use many client ids (`{deviceId}:{anything}`), each with
 *   a session of its own; beyond this many away at once, its oldest away one is forgotten. Without
 *   it one device reconnecting under fresh client ids left a session each for SESSION_EXPIRY_MS.
 * - Only filters the device may hold are stored (a gateway device's: its own, its children's, and
 *   `devices/+/commands/#`, through which only its children's commands are forwarded). aedes stores every filter of a SUBSCRIBE packet as
 *   soon as the first one is granted (handlers/subscribe.js storeSubscriptions), refused ones
 *   included, and it queues into a session by the stored filters: a device subscribing to its own
 *   commands and another device's in one packet was queued the other device's commands while away,
 *   and got them on its return.
 * - QoS 2 publishes waiting for PUBREL are kept without their payload: only their packet id is ever
 *   read again, for [MQTT-4.3.3-2] duplicate detection (method B of §4.3.3). With payloads, a device
 *   withholding PUBREL held aedes' 1,000 of them, up to MAX_PACKET_BYTES each, for as long as its
 *   session lived.
 */

export interface SessionStoreOptions {
  maxQueued: number;
  expiryMs: number;
  /** Subscriptions stored per session, as many as a connection may hold. */
  maxSubscriptions: number;
  /** Away sessions per device (AUTH_MODE=registry only: a device is known by its client ids). */
  maxAwayPerDevice: number;
  /** The device a client id belongs to, when client ids name devices (AUTH_MODE=registry). */
  deviceOfClient: ((clientId: string) => string | undefined) | undefined;
  /** Gateway devices and their children (broker/gateway-children.ts), as the registry has them now. */
  children?: { isGateway(deviceId: string): boolean; speaksFor(gatewayId: string, childId: string): boolean };
  events?: SessionEvents;
  now?: () => number;
}

export interface SessionEvents {
  /** A publish was queued for a session whose client is away. */
  queued?(clientId: string, packet: QueuedPacket): void;
  /** A publish was not queued: the session's queue holds MAX_QUEUED_MESSAGES. */
  queueFull?(clientId: string, packet: QueuedPacket): void;
  /** Neither: its client is connected with MAX_QUEUED_MESSAGES unacknowledged; it is not sent. */
  backlogged?(clientId: string, packet: QueuedPacket): void;
  /** A session away for SESSION_EXPIRY_MS was forgotten. */
  expired?(clientId: string): void;
  /** A session was forgotten for a newer one of the same device beyond MAX_SESSIONS_PER_DEVICE. */
  evicted?(clientId: string): void;
}

export interface QueuedPacket {
  topic: string;
  payload: Buffer | string;
  messageId?: number;
  /** aedes' identity of a publish, kept by every copy of it (aedes-packet). */
  brokerId?: string;
  brokerCounter?: number;
}

interface SessionClient {
  id: string;
  clean?: boolean;
  closed?: boolean;
}

interface StoredSubscription {
  topic: string;
  qos: number;
}

/** The promise side of aedes-persistence's CallBackPersistence, as aedes itself calls it. */
interface Persistence {
  setup(broker: unknown): Promise<void>;
  addSubscriptions(client: SessionClient, subs: StoredSubscription[]): Promise<void>;
  subscriptionsByClient(client: SessionClient): Promise<StoredSubscription[]>;
  cleanSubscriptions(client: SessionClient): Promise<void>;
  outgoingEnqueue(sub: { clientId: string }, packet: QueuedPacket): Promise<void>;
  outgoingEnqueueCombi(subs: { clientId: string }[], packet: QueuedPacket): Promise<void>;
  outgoingUpdate(client: SessionClient, packet: QueuedPacket): Promise<void>;
  outgoingClearMessageId(client: SessionClient, packet: QueuedPacket): Promise<QueuedPacket | undefined>;
  outgoingStream(client: SessionClient): AsyncIterable<QueuedPacket>;
  incomingStorePacket(client: SessionClient, packet: QueuedPacket): Promise<void>;
  cleanIncoming(client: SessionClient): Promise<void>;
  destroy(): Promise<void>;
}

/** What the store needs of the broker: who is connected, and connection events. */
interface BrokerView {
  clients: Record<string, SessionClient | undefined>;
  on(event: 'clientReady' | 'clientDisconnect', listener: (client: SessionClient) => void): unknown;
}

const NO_PAYLOAD = Buffer.alloc(0);
/** Outside MQTT's packet ids (1–65,535): marks one unsent packet for removal. */
const UNSENT_MARK = -1;
/** How often sessions past their expiry are looked for: a fraction of it, at most a minute. */
const MAX_SWEEP_INTERVAL_MS = 60_000;

export class SessionStore {
  /** Handed to aedes as its `persistence`. */
  readonly persistence: object;
  // A CommonJS module whose export is the factory; its .d.ts declares it as an ES default export.
  private readonly inner = (memory as unknown as () => Persistence)();
  private readonly now: () => number;
  private broker: BrokerView | undefined;
  /** Publishes in each session's queue (sent or not), for MAX_QUEUED_MESSAGES. */
  private readonly queued = new Map<string, number>();
  /** Publishes not queued for connected clients over the bound, by payload: their forward is refused. */
  private readonly refused = new WeakMap<object, Set<string>>();
  /** Persistent sessions whose client is away, oldest first: the order they went away in. */
  private readonly awaySince = new Map<string, number>();
  /** The same sessions by device, each set oldest first. */
  private readonly awayByDevice = new Map<string, Set<string>>();
  /** Connected persistent sessions to forget, not keep, when their client goes (movedAway). */
  private readonly moving = new Set<string>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly options: SessionStoreOptions) {
    this.now = options.now ?? Date.now;
    const overrides: Record<string, unknown> = {
      // aedes insists on an AsyncFunction here.
      setup: async (broker: BrokerView) => this.setup(broker),
      addSubscriptions: (client: SessionClient, subs: StoredSubscription[]) =>
        this.addSubscriptions(client, subs),
      outgoingEnqueue: (sub: { clientId: string }, packet: QueuedPacket) => this.enqueue([sub], packet),
      outgoingEnqueueCombi: (subs: { clientId: string }[], packet: QueuedPacket) =>
        this.enqueue(subs, packet),
      outgoingClearMessageId: (client: SessionClient, packet: QueuedPacket) => this.cleared(client, packet),
      incomingStorePacket: (client: SessionClient, packet: QueuedPacket) =>
        this.inner.incomingStorePacket(client, { ...packet, payload: NO_PAYLOAD }),
      destroy: async () => {
        clearInterval(this.sweeper);
        return this.inner.destroy();
      },
    };
    const inner = this.inner as unknown as Record<string | symbol, unknown>;
    this.persistence = new Proxy(inner, {
      get(target, prop) {
        if (typeof prop === 'string' && prop in overrides) return overrides[prop];
        const value = target[prop];
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  /** Sessions whose client is away. */
  get away(): number {
    return this.awaySince.size;
  }

  /** Publishes queued in a session, sent or not. */
  queuedFor(clientId: string): number {
    return this.queued.get(clientId) ?? 0;
  }

  /**
   * aedes' authorizeForward: a publish reaches a client only if it is for the client's own device.
   * The ACL already keeps other filters out; this holds even for anything queued before it did.
   */
  readonly authorizeForward = <P extends { topic: string; payload?: unknown }>(
    client: SessionClient,
    packet: P,
  ): P | null => {
    const payload = packet.payload;
    if (typeof payload === 'object' && payload !== null && this.refused.get(payload)?.has(client.id))
      return null;
    return this.receives(client.id, packet.topic) ? packet : null;
  };

  /**
   * Whether a client may be sent (or queued) a publish: its own device's commands, or a gateway
   * device's children's, whose `devices/+/commands/#` matches every device's.
   */
  private receives(clientId: string, topic: string): boolean {
    const owner = this.options.deviceOfClient;
    if (owner === undefined) return true; // AUTH_MODE=open: any client may be any device
    const device = owner(clientId);
    // A Sparkplug edge node's commands (NCMD, DCMD): only those under its own edge node id. A host
    // application's STATE is for any edge node that subscribed (the ACL grants it to gateway devices).
    const sparkplug = parseSparkplugTopic(topic);
    if (sparkplug !== undefined)
      return (
        sparkplug.kind === 'state' ||
        ((sparkplug.type === 'NCMD' || sparkplug.type === 'DCMD') && sparkplug.edgeNodeId === device)
      );
    const parsed = parseDeviceTopic(topic);
    if (parsed?.kind !== 'commands') return false;
    if (parsed.deviceId === device) return true;
    return device !== undefined && this.options.children?.speaksFor(device, parsed.deviceId) === true;
  }

  /**
   * The client id now has its session at another gateway: the one here is forgotten, queue and all,
   * at once if its client is away, else as its connection closes (rather than kept for its return).
   * Without it, commands meanwhile were also queued here, and replayed if it ever came back. True
   * when there was a persistent session to forget.
   */
  movedAway(clientId: string): boolean {
    // Still registered (connected, or closing: aedes unregisters it, with clientDisconnect, once
    // its subscriptions are gone).
    const client = this.broker?.clients[clientId];
    if (client !== undefined) {
      if (client.clean !== false) return false;
      this.moving.add(clientId);
      return true;
    }
    if (!this.awaySince.has(clientId)) return false;
    this.back(clientId);
    void this.forget(clientId);
    return true;
  }

  /** Forgets sessions away for SESSION_EXPIRY_MS or longer. */
  async sweep(): Promise<void> {
    const now = this.now();
    for (const [clientId, since] of this.awaySince) {
      if (now - since < this.options.expiryMs) break;
      this.back(clientId);
      if (this.isConnected(clientId)) continue;
      await this.forget(clientId);
      this.options.events?.expired?.(clientId);
    }
  }

  private async setup(broker: BrokerView): Promise<void> {
    await this.inner.setup(broker);
    this.broker = broker;
    broker.on('clientReady', (client) => this.back(client.id));
    broker.on('clientDisconnect', (client) => {
      const moved = this.moving.delete(client.id);
      if (client.clean !== false) return;
      if (moved) void this.forget(client.id);
      else this.wentAway(client.id);
    });
    const interval = Math.max(50, Math.min(MAX_SWEEP_INTERVAL_MS, Math.floor(this.options.expiryMs / 4)));
    this.sweeper = setInterval(() => void this.sweep(), interval).unref();
  }

  private wentAway(clientId: string): void {
    this.back(clientId); // re-inserted last: the maps stay in the order sessions went away
    this.awaySince.set(clientId, this.now());
    const device = this.options.deviceOfClient?.(clientId);
    if (device === undefined) return;
    let sessions = this.awayByDevice.get(device);
    if (sessions === undefined) {
      sessions = new Set();
      this.awayByDevice.set(device, sessions);
    }
    sessions.add(clientId);
    if (sessions.size <= this.options.maxAwayPerDevice) return;
    const oldest = sessions.values().next().value!;
    this.back(oldest);
    void this.forget(oldest).then(() => this.options.events?.evicted?.(oldest));
  }

  /** No longer an away session: back, expired or evicted. */
  private back(clientId: string): void {
    this.awaySince.delete(clientId);
    const device = this.options.deviceOfClient?.(clientId);
    const sessions = device === undefined ? undefined : this.awayByDevice.get(device);
    if (sessions === undefined) return;
    sessions.delete(clientId);
    if (sessions.size === 0) this.awayByDevice.delete(device!);
  }

  private isConnected(clientId: string): boolean {
    const client = this.broker?.clients[clientId];
    return client !== undefined && client.closed !== true;
  }

  private async addSubscriptions(client: SessionClient, subs: StoredSubscription[]): Promise<void> {
    const owner = this.options.deviceOfClient;
    const device = owner?.(client.id);
    const gateway = device !== undefined && this.options.children?.isGateway(device) === true;
    const own =
      owner === undefined
        ? subs
        : subs.filter((s) => {
            const of = commandsFilterOwner(s.topic);
            if (of === device) return true;
            if (!gateway) return false;
            if (sparkplugCommandsFilterOwner(s.topic) === device || isSparkplugStateFilter(s.topic))
              return true;
            return (
              isChildrenCommandsFilter(s.topic) ||
              (of !== undefined && this.options.children!.speaksFor(device!, of))
            );
          });
    const held = new Set((await this.inner.subscriptionsByClient(client)).map((s) => s.topic));
    let room = this.options.maxSubscriptions - held.size;
    const kept = own.filter((s) => held.has(s.topic) || room-- > 0);
    if (kept.length > 0) await this.inner.addSubscriptions(client, kept);
  }

  /**
   * Queues a publish for each session; one whose queue is full is skipped. For a connected client
   * that is also its forward refused (authorizeForward): aedes looks up each publish to a connected
   * persistent client in its queue before writing it, and closes the connection on one it cannot find.
   */
  private enqueue(subs: { clientId: string }[], packet: QueuedPacket): Promise<void> {
    const kept: { clientId: string }[] = [];
    for (const sub of subs) {
      // Not another device's command through a gateway device's wildcard (nor promised `queued`).
      if (!this.receives(sub.clientId, packet.topic)) continue;
      const connected = this.isConnected(sub.clientId);
      const count = this.queuedFor(sub.clientId);
      if (count >= this.options.maxQueued) {
        if (connected) {
          this.refuse(sub.clientId, packet);
          this.options.events?.backlogged?.(sub.clientId, packet);
        } else this.options.events?.queueFull?.(sub.clientId, packet);
        continue;
      }
      this.queued.set(sub.clientId, count + 1);
      kept.push(sub);
      if (!connected) this.options.events?.queued?.(sub.clientId, packet);
    }
    return kept.length === 0 ? Promise.resolve() : this.inner.outgoingEnqueueCombi(kept, packet);
  }

  private refuse(clientId: string, packet: QueuedPacket): void {
    const payload = packet.payload;
    if (typeof payload !== 'object') return;
    let clients = this.refused.get(payload);
    if (clients === undefined) {
      clients = new Set();
      this.refused.set(payload, clients);
    }
    clients.add(clientId);
  }

  private async cleared(client: SessionClient, packet: QueuedPacket): Promise<QueuedPacket | undefined> {
    const removed =
      packet.messageId === undefined && packet.brokerCounter !== undefined
        ? await this.clearUnsent(client, packet)
        : await this.inner.outgoingClearMessageId(client, packet);
    if (removed !== undefined) {
      const left = this.queuedFor(client.id) - 1;
      if (left > 0) this.queued.set(client.id, left);
      else this.queued.delete(client.id);
    }
    return removed;
  }

  /**
   * A forward refused to a connected client (its own authorizeForward, or a backlogged connection):
   * aedes clears it from the queue by a packet id it never got, and aedes-persistence then removes
   * the first packet without one, often another command of the same burst, not yet written, whose
   * write then fails ('no such packet') and closes the connection. This one is found by its broker
   * counter instead; one never queued (over the bound) is not found, and nothing is removed.
   */
  private async clearUnsent(client: SessionClient, packet: QueuedPacket): Promise<QueuedPacket | undefined> {
    try {
      await this.inner.outgoingUpdate(client, { ...packet, messageId: UNSENT_MARK });
    } catch {
      return undefined;
    }
    return this.inner.outgoingClearMessageId(client, { ...packet, messageId: UNSENT_MARK });
  }

  private async forget(clientId: string): Promise<void> {
    const client = { id: clientId };
    await this.inner.cleanSubscriptions(client);
    const packets: QueuedPacket[] = [];
    for await (const packet of this.inner.outgoingStream(client)) packets.push(packet);
    // Unsent packets have no id: each call removes the first of them.
    for (const packet of packets) await this.inner.outgoingClearMessageId(client, packet);
    await this.inner.cleanIncoming(client);
    this.queued.delete(clientId);
  }
}
