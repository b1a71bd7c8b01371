import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Logger } from '../common/logger.js';
import { DEFAULT_TENANT, isDeviceId } from '../contract/ids.js';
import { commandsFilterOwner, commandsTopic, parseDeviceTopic } from '../contract/topics.js';
import type { GatewayConfig } from './config.js';
import { AclDeniedError, AuthError, type NotStoredError, reject } from './errors.js';
import { type DeviceIdentity, deviceIdentity, type TelemetryHandler } from './ingest/telemetry-handler.js';
import type { GatewayMetrics } from './metrics.js';
import { decodeStatus, type PresencePublisher } from './presence.js';
import type { RegistryCache } from './registry/registry-cache.js';
import type { VerifiedSecrets } from './registry/secrets.js';

/**
 * The embedded MQTT broker. Hooks stay thin: they adapt aedes callbacks to the handlers.
 *
 * Why authorizePublish carries the ingest: aedes writes the QoS 1 PUBACK before it calls
 * `published`, so the only place that can hold the PUBACK until JetStream has stored the event is
 * authorizePublish, which runs before aedes acknowledges anything.
 */
export interface BrokerDeps {
  config: GatewayConfig;
  /** Undefined in AUTH_MODE=open. */
  registry: RegistryCache | undefined;
  verified: VerifiedSecrets;
  telemetry: TelemetryHandler;
  presence: PresencePublisher;
  metrics: GatewayMetrics;
  log: Logger;
}

/** In open mode a client's device is bound by the first device topic it uses. */
interface Session {
  identity: DeviceIdentity | undefined;
  lostReason: string | undefined;
}

type AedesClientInternals = Client & {
  _parser?: { _parseLength: () => boolean; packet: { length: number }; _emitError: (e: Error) => boolean };
  /** Set by aedes when the client sent DISCONNECT. */
  _disconnected?: boolean;
};

const CLIENT_ID_SEPARATOR = ':';

function authError(err: AuthError): AuthenticateError {
  return Object.assign(new Error(err.message), { returnCode: err.returnCode }) as AuthenticateError;
}

export class DeviceBroker {
  readonly aedes: Aedes;
  private readonly sessions = new WeakMap<Client, Session>();
  private readonly byDevice = new Map<string, Set<Client>>();

  private constructor(private readonly deps: BrokerDeps) {
    this.aedes = new Aedes({
      id: undefined,
      // A slow subscriber is cut off rather than allowed to stall deliveries to everyone.
      drainTimeout: 30_000,
      maxClientsIdLength: 128,
      authenticate: (client, username, password, done) => {
        this.authenticate(client, username, password).then(
          () => done(null, true),
          (err) => {
            const e = err instanceof AuthError ? err : new AuthError('registry_unavailable', 3);
            if (!(err instanceof AuthError)) deps.log.error({ err }, 'authentication failed unexpectedly');
            deps.metrics.connects.labels(e.reason).inc();
            deps.log.warn(
              {
                clientId: client.id,
                username,
                remote: client.conn && 'remoteAddress' in client.conn ? client.conn.remoteAddress : undefined,
                reason: e.reason,
              },
              'connection refused',
            );
            done(authError(e), false);
          },
        );
      },
      // Last line of defence: a bug in a hook closes that one connection, never the process.
      authorizePublish: (client, packet, done) =>
        this.guarded(client, () => this.authorizePublish(client, packet, done), done),
      authorizeSubscribe: (client, sub, done) =>
        this.guarded(client, () => this.authorizeSubscribe(client, sub, done), done),
    });
    this.aedes.on('clientReady', (client) => this.onReady(client));
    this.aedes.on('clientDisconnect', (client) => this.onDisconnect(client));
    this.aedes.on('keepaliveTimeout', (client) => this.markLost(client, 'keepalive timeout'));
    this.aedes.on('clientError', (client, err) => {
      this.markLost(client, err.message);
      deps.log.debug({ clientId: client.id, err: err.message }, 'client error');
    });
    this.aedes.on('connectionError', (client, err) => {
      deps.log.debug({ clientId: client.id, err: err.message }, 'connection error before CONNECT completed');
    });
  }

  static async create(deps: BrokerDeps): Promise<DeviceBroker> {
    const broker = new DeviceBroker(deps);
    await broker.aedes.listen();
    return broker;
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  /** Connection listener for any transport; refuses MQTT frames above MAX_PACKET_BYTES before buffering them. */
  readonly handle = (stream: Parameters<Aedes['handle']>[0], req?: Parameters<Aedes['handle']>[1]): void => {
    const client = this.aedes.handle(stream, req) as AedesClientInternals;
    const parser = client._parser;
    if (parser === undefined) return;
    const limit = this.deps.config.MAX_PACKET_BYTES;
    const parseLength = parser._parseLength;
    // mqtt-packet has no size limit and would buffer up to 256 MB per frame; stop at the header.
    parser._parseLength = function (this: typeof parser) {
      const ok = parseLength.call(this);
      if (ok && this.packet.length > limit) {
        return this._emitError(
          new Error(`packet of ${this.packet.length} bytes exceeds MAX_PACKET_BYTES (${limit})`),
        );
      }
      return ok;
    };
  };

  /** Closes every connection of a device (disabled, removed or rotated in the registry). */
  disconnectDevice(deviceId: string, why: string): number {
    const clients = this.byDevice.get(deviceId);
    if (!clients) return 0;
    for (const client of clients) {
      this.markLost(client, why);
      client.close();
    }
    this.deps.log.info({ device: deviceId, why, connections: clients.size }, 'device disconnected');
    return clients.size;
  }

  isOnline(deviceId: string): boolean {
    return (this.byDevice.get(deviceId)?.size ?? 0) > 0;
  }

  /** Delivers a command to `devices/{id}/commands/{path}` at QoS 1. */
  deliverCommand(deviceId: string, path: readonly string[], payload: Uint8Array): Promise<void> {
    const packet = {
      cmd: 'publish',
      topic: commandsTopic(deviceId, path),
      payload: Buffer.from(payload),
      qos: 1,
      retain: false,
      dup: false,
    } as PublishPacket;
    return new Promise((resolve, reject) =>
      this.aedes.publish(packet, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.aedes.close(() => resolve()));
  }

  private guarded(client: Client | null, hook: () => void, done: (err: Error) => void): void {
    try {
      hook();
    } catch (err) {
      this.deps.log.error(
        { err, clientId: client?.id },
        'broker hook threw (a bug): closing the connection, no ack',
      );
      done(err as Error);
    }
  }

  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined) {
    const { registry, verified, metrics } = this.deps;
    if (registry === undefined) {
      const deviceId = username !== undefined && isDeviceId(username) ? username : undefined;
      const identity = deviceId ? deviceIdentity(deviceId, DEFAULT_TENANT, {}) : undefined;
      this.sessions.set(client, { identity, lostReason: undefined });
      metrics.connects.labels('accepted_open').inc();
      return;
    }
    if (username === undefined || !isDeviceId(username) || password === undefined) {
      throw new AuthError('bad_credentials', 4);
    }
    const record = registry.get(username);
    // Unknown device and wrong secret answer alike, and nothing else about a device (disabled, its
    // client id rule) is revealed before its secret checks out: ids cannot be probed.
    if (record === undefined) throw new AuthError('bad_credentials', 4);
    if (!(await verified.verify(record.id, record.secretHash, password)))
      throw new AuthError('bad_credentials', 4);
    const now = registry.get(username);
    if (now === undefined || now.secretHash !== record.secretHash) throw new AuthError('bad_credentials', 4);
    if (now.disabled) throw new AuthError('disabled', 5);
    // A client id names a session; tying it to the device makes cross-device takeover impossible.
    if (client.id !== username && !client.id.startsWith(username + CLIENT_ID_SEPARATOR)) {
      throw new AuthError('client_id_rejected', 2);
    }
    this.sessions.set(client, {
      identity: deviceIdentity(now.id, now.tenant, now.labels),
      lostReason: undefined,
    });
    metrics.connects.labels('accepted').inc();
  }

  /** The client's identity, binding it to `deviceId` first if it is an open-mode client not yet bound. */
  private identityFor(client: Client, deviceId: string | undefined): DeviceIdentity | undefined {
    const session = this.sessions.get(client);
    if (session === undefined) return undefined;
    if (session.identity === undefined && this.deps.registry === undefined && deviceId !== undefined) {
      session.identity = deviceIdentity(deviceId, DEFAULT_TENANT, {});
      this.bind(client, session.identity);
    }
    return session.identity;
  }

  private deny(client: Client, action: 'publish' | 'subscribe', topic: string): AclDeniedError {
    this.deps.metrics.aclDenied.labels(action).inc();
    this.deps.log.warn({ clientId: client.id, action, topic: topic.slice(0, 256) }, 'ACL denied');
    return new AclDeniedError(action, topic, client.id);
  }

  private authorizePublish(
    client: Client | null,
    packet: PublishPacket,
    done: (err?: Error | null) => void,
  ): void {
    if (client === null) {
      done(null); // a will left by a dead broker instance
      return;
    }
    const { telemetry, presence, metrics, config } = this.deps;
    const topic = parseDeviceTopic(packet.topic);
    const identity = this.identityFor(client, topic?.deviceId);
    if (
      topic === undefined ||
      identity === undefined ||
      topic.deviceId !== identity.deviceId ||
      topic.kind === 'commands'
    ) {
      metrics.publish('denied', packet.qos);
      done(this.deny(client, 'publish', packet.topic));
      return;
    }
    // Nothing here is served from aedes's retained store; keeping payloads there only costs memory.
    packet.retain = false;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const qos = packet.qos;
    const finish = (err?: NotStoredError) => {
      metrics.publish(err ? 'not_stored' : 'acked', qos);
      if (err)
        this.deps.log.warn(
          { clientId: client.id, err: err.message },
          'publish not stored: no PUBACK, closing',
        );
      done(err ?? null);
    };
    // QoS 0 has no acknowledgement to hold, so it is not retried either.
    const wanted = qos === 0 ? () => false : () => !client.closed;
    const msg = { topic: packet.topic, payload, qos, packetId: packet.messageId, clientId: client.id };
    switch (topic.kind) {
      case 'telemetry':
        telemetry.handle(identity, msg, wanted, finish);
        return;
      case 'status':
        presence.publish(
          {
            tenant: identity.tenant,
            deviceId: identity.deviceId,
            clientId: client.id,
            type: 'status',
            status: decodeStatus(payload, config.MAX_PAYLOAD_BYTES),
          },
          (err) => finish(err as NotStoredError | undefined),
        );
        return;
      default: {
        const receivedAt = new Date().toISOString();
        const rejection = reject(
          'TOPIC_UNKNOWN',
          `'${packet.topic.slice(0, 256)}' is not a topic of the device contract`,
        );
        telemetry.deadLetter(identity, msg, rejection, undefined, undefined, receivedAt, wanted, finish);
      }
    }
  }

  private authorizeSubscribe(
    client: Client,
    sub: Subscription,
    done: (err: Error | null, sub?: Subscription | null) => void,
  ): void {
    const owner = commandsFilterOwner(sub.topic);
    const identity = this.identityFor(client, owner);
    if (owner === undefined || identity === undefined || owner !== identity.deviceId) {
      this.deny(client, 'subscribe', sub.topic);
      // [MQTT-3.9.3] SUBACK return code 0x80: the subscription fails, the connection stays.
      done(null, null);
      return;
    }
    done(null, sub);
  }

  private track(client: Client, deviceId: string): void {
    let set = this.byDevice.get(deviceId);
    if (!set) {
      set = new Set();
      this.byDevice.set(deviceId, set);
    }
    set.add(client);
  }

  private markLost(client: Client, reason: string): void {
    const session = this.sessions.get(client);
    if (session && session.lostReason === undefined) session.lostReason = reason;
  }

  private onReady(client: Client): void {
    const identity = this.sessions.get(client)?.identity;
    if (identity !== undefined) this.bind(client, identity); // else: open-mode client, bound on first use
  }

  private bind(client: Client, identity: DeviceIdentity): void {
    this.track(client, identity.deviceId);
    this.deps.presence.publish({
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      clientId: client.id,
      type: 'connected',
    });
  }

  private onDisconnect(client: Client): void {
    const session = this.sessions.get(client);
    const identity = session?.identity;
    if (identity === undefined) return;
    const set = this.byDevice.get(identity.deviceId);
    set?.delete(client);
    if (set?.size === 0) this.byDevice.delete(identity.deviceId);
    const clean = (client as AedesClientInternals)._disconnected === true;
    this.deps.presence.publish({
      tenant: identity.tenant,
      deviceId: identity.deviceId,
      clientId: client.id,
      type: clean ? 'disconnected' : 'lost',
      ...(clean ? {} : { reason: session?.lostReason ?? 'connection closed' }),
    });
  }
}
