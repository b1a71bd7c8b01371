import { Aedes, type PublishPacket } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { sparkplugStatePayload, sparkplugStateTopic } from '../../contract/sparkplug.js';
import { type GatewayConfig, SPARKPLUG_NO_HOST } from '../config.js';
import type { TelemetryHandler } from '../ingest/telemetry-handler.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PresencePublisher } from '../presence.js';
import type { RegistryCache } from '../registry/registry-cache.js';
import type { VerifiedSecrets } from '../registry/secrets.js';
import type { EdgeNodes } from '../sparkplug/edge-nodes.js';
import {
  countCompletionsWhilePaused,
  limitFrameSizes,
  skipIngested,
  writeAcksInOneWrite,
} from './aedes-internals.js';
import { Authenticator } from './authentication.js';
import { authorizePublish, type PublishDeps } from './authorize-publish.js';
import { authorizeSubscribe, type SubscribeDeps, unsubscribed } from './authorize-subscribe.js';
import { Connections } from './connections.js';
import type { GatewayChildren } from './gateway-children.js';
import { guarded } from './guarded.js';
import { PublishBudgets } from './publish-budget.js';
import { forSparkplug, type SparkplugPublishDeps } from './sparkplug-publish.js';

export interface BrokerDeps {
  config: GatewayConfig;
  /** Undefined in AUTH_MODE=open. */
  registry: RegistryCache | undefined;
  /** Gateway devices' children (undefined in AUTH_MODE=open). */
  children?: GatewayChildren;
  verified: VerifiedSecrets;
  telemetry: TelemetryHandler;
  presence: PresencePublisher;
  metrics: GatewayMetrics;
  log: Logger;
  /** Sparkplug B edge nodes' sessions (undefined in AUTH_MODE=open, where no device is a gateway device). */
  edgeNodes?: EdgeNodes;
  /** Told of each connection once its CONNACK went out (gateway/takeover.ts announces it). */
  ready?: (clientId: string) => void;
  /** Connection-level hooks and bounds (gateway/limits/connection-policy.ts); the broker's own win. */
  aedesOptions?: ConstructorParameters<typeof Aedes>[0];
}

/** How often drained limiter entries are forgotten. */
const LIMITER_SWEEP_MS = 30_000;

/**
 * The embedded MQTT broker: aedes, wired to one module per concern. Its hooks only adapt aedes'
 * callbacks: authentication.ts (CONNECT), authorize-publish.ts (with flow-control.ts and
 * publish-budget.ts), authorize-subscribe.ts, connections.ts (per-device connections and presence);
 * aedes-internals.ts holds every patch of aedes' internals.
 */
export class DeviceBroker {
  readonly aedes: Aedes;
  /** Shared with HTTP ingest: one device's budgets hold over both transports. */
  readonly budgets: PublishBudgets;
  private readonly connections: Connections;
  private readonly sweeper: NodeJS.Timeout;

  private constructor(
    private readonly deps: BrokerDeps,
    /** Shared with HTTP ingest: its failures, verification queue and remembered secrets are one. */
    readonly auth: Authenticator,
  ) {
    const { config, metrics, log } = deps;
    const connections = new Connections({
      maxPerDevice: config.MAX_CONNECTIONS_PER_DEVICE,
      openMode: deps.registry === undefined,
      presence: deps.presence,
      metrics,
      log,
    });
    this.connections = connections;
    const budgets = new PublishBudgets({
      msgsPerSec: config.DEVICE_MAX_MSGS_PER_SEC,
      msgsBurst: config.DEVICE_MSGS_BURST,
      bytesPerSec: config.DEVICE_MAX_BYTES_PER_SEC,
      bytesBurst: config.DEVICE_BYTES_BURST,
      metrics,
      log,
    });
    this.budgets = budgets;
    const publish: PublishDeps = {
      connections,
      budgets,
      telemetry: deps.telemetry,
      presence: deps.presence,
      ...(deps.children ? { children: deps.children } : {}),
      maxInFlight: config.MAX_IN_FLIGHT_PER_CLIENT,
      metrics,
      log,
    };
    const { edgeNodes, children } = deps;
    if (edgeNodes !== undefined && children !== undefined) {
      const sparkplug: SparkplugPublishDeps = {
        edgeNodes,
        telemetry: deps.telemetry,
        send: (command) =>
          this.aedes.publish(
            {
              cmd: 'publish',
              topic: command.topic,
              payload: Buffer.from(command.payload),
              qos: 0,
              retain: false,
              dup: false,
            } as PublishPacket,
            (err) => {
              if (err) log.warn({ topic: command.topic, err: err.message }, 'Sparkplug command not sent');
            },
          ),
        now: Date.now,
      };
      publish.sparkplug = (client, gateway, packet, done) =>
        forSparkplug(publish, sparkplug, client, gateway, packet, done);
    }
    const subscribe: SubscribeDeps = {
      connections,
      ...(deps.children ? { children: deps.children } : {}),
      maxSubscriptions: config.MAX_SUBSCRIPTIONS_PER_CLIENT,
      metrics,
      log,
    };
    this.sweeper = setInterval(() => {
      auth.sweep();
      budgets.sweep();
    }, LIMITER_SWEEP_MS).unref();
    this.aedes = new Aedes({
      ...deps.aedesOptions,
      id: undefined,
      maxClientsIdLength: 128,
      authenticate: (client, username, password, done) => {
        auth.authenticate(client, username, password).then(
          (identity) => {
            connections.accepted(client, identity);
            done(null, true);
          },
          (err) => done(err, false),
        );
      },
      // Last line of defence: a bug in a hook closes that one connection, never the process.
      authorizePublish: (client, packet, done) =>
        guarded(log, client?.id, () => authorizePublish(publish, client, packet, done), done),
      authorizeSubscribe: (client, sub, done) =>
        guarded(log, client?.id, () => authorizeSubscribe(subscribe, client, sub, done), done),
    });
    skipIngested(this.aedes);
    this.aedes.on('clientReady', (client) => {
      connections.ready(client);
      deps.ready?.(client.id);
    });
    this.aedes.on('clientDisconnect', (client) => {
      connections.disconnected(client);
      // The edge node's session ends with the connection that sent its NBIRTH. What went offline with
      // it is already told: the node's connection and its devices' (children seen on it) just did.
      const identity = connections.state(client)?.identity;
      if (identity?.gateway !== undefined) edgeNodes?.closed(identity.tenant, identity.deviceId, client);
    });
    this.aedes.on('unsubscribe', (topics, client) => unsubscribed(connections, client, topics));
    this.aedes.on('keepaliveTimeout', (client) => connections.markLost(client, 'keepalive timeout'));
    this.aedes.on('clientError', (client, err) => {
      connections.markLost(client, err.message);
      log.debug({ clientId: client.id, err: err.message }, 'client error');
    });
    this.aedes.on('connectionError', (client, err) => {
      log.debug({ clientId: client.id, err: err.message }, 'connection error before CONNECT completed');
    });
  }

  static async create(deps: BrokerDeps): Promise<DeviceBroker> {
    writeAcksInOneWrite();
    const auth = await Authenticator.create(deps);
    const broker = new DeviceBroker(deps, auth);
    await broker.aedes.listen();
    await broker.announceHost(true);
    return broker;
  }

  /**
   * The gateway is the Sparkplug host application its edge nodes report to: its STATE, retained, so
   * that an edge node configured with SPARKPLUG_HOST_ID as its primary host sees it online when it
   * subscribes, and offline before a graceful stop closes the connections.
   */
  private announceHost(online: boolean): Promise<void> {
    const hostId = this.deps.config.SPARKPLUG_HOST_ID;
    if (hostId === SPARKPLUG_NO_HOST) return Promise.resolve();
    const packet = {
      cmd: 'publish',
      topic: sparkplugStateTopic(hostId),
      payload: Buffer.from(sparkplugStatePayload(online, Date.now())),
      qos: 1,
      retain: true,
      dup: false,
    } as PublishPacket;
    return new Promise((resolve) =>
      this.aedes.publish(packet, (err) => {
        if (err) this.deps.log.warn({ err: err.message, online }, 'Sparkplug host STATE not published');
        resolve();
      }),
    );
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  /**
   * Connection listener for any transport; refuses MQTT frames above MAX_PACKET_BYTES, and a CONNECT
   * above MAX_CONNECT_BYTES, as soon as their header arrives, before buffering them.
   */
  readonly handle = (stream: Parameters<Aedes['handle']>[0], req?: Parameters<Aedes['handle']>[1]): void => {
    const client = this.aedes.handle(stream, req);
    countCompletionsWhilePaused(client);
    const { config, metrics } = this.deps;
    limitFrameSizes(client, {
      maxConnectBytes: config.MAX_CONNECT_BYTES,
      maxPacketBytes: config.MAX_PACKET_BYTES,
      exceeded: (setting) => metrics.limitReached(setting),
    });
  };

  /** Closes every connection of a device (disabled, removed or rotated in the registry). */
  disconnectDevice(deviceId: string, why: string): number {
    return this.connections.disconnectDevice(deviceId, why);
  }

  /** Closes the connection under this client id, which `by` (another gateway) now has; true when there was one. */
  takeOver(clientId: string, by: string): boolean {
    return this.connections.takeOver(clientId, by);
  }

  isOnline(deviceId: string): boolean {
    return this.connections.isOnline(deviceId);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await this.announceHost(false);
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
