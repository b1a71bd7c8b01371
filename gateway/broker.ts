import { randomBytes } from 'node:crypto';
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Logger } from '../common/logger.js';
import { DEFAULT_TENANT, isDeviceId } from '../contract/ids.js';
import { commandsFilterOwner, parseDeviceTopic } from '../contract/topics.js';
import type { GatewayConfig } from './config.js';
import {
  AclDeniedError,
  AuthError,
  type NotStoredError,
  PublishRateError,
  reject,
  SubscriptionLimitError,
  VerifyBusyError,
} from './errors.js';
import { type DeviceIdentity, deviceIdentity, type TelemetryHandler } from './ingest/telemetry-handler.js';
import { AuthFailureLimiter, sourceKey } from './limits/auth-failures.js';
import { TokenBuckets } from './limits/token-buckets.js';
import { VerifyQueue } from './limits/verify-queue.js';
import type { GatewayMetrics } from './metrics.js';
import type { PresencePublisher } from './presence.js';
import type { RegistryCache } from './registry/registry-cache.js';
import { hashSecret, type VerifiedSecrets } from './registry/secrets.js';

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
  /** Connection-level hooks and bounds (gateway/limits/connection-policy.ts); the broker's own win. */
  aedesOptions?: ConstructorParameters<typeof Aedes>[0];
}

/** In open mode a client's device is bound by the first device topic it uses. */
interface Session {
  identity: DeviceIdentity | undefined;
  lostReason: string | undefined;
  /** Filters granted and still held, and the number refused: both count against MAX_SUBSCRIPTIONS_PER_CLIENT. */
  subscriptions: Set<string>;
  refusedSubscriptions: number;
  /** Publishes handed to the ingest or waiting for a rate token, not yet answered. */
  inFlight: number;
  /** Reading paused because inFlight reached MAX_IN_FLIGHT_PER_CLIENT. */
  paused: boolean;
}

const newSession = (identity: DeviceIdentity | undefined): Session => ({
  identity,
  lostReason: undefined,
  subscriptions: new Set(),
  refusedSubscriptions: 0,
  inFlight: 0,
  paused: false,
});

type AedesClientInternals = Client & {
  _parser?: {
    _parseLength: () => boolean;
    packet: { cmd: string; length: number };
    _emitError: (e: Error) => boolean;
  };
  /** Set by aedes when the client sent DISCONNECT. */
  _disconnected?: boolean;
  /** Stop and restart reading the connection (aedes uses them around authentication). */
  pause: () => void;
  resume: () => void;
  _paused: boolean;
  /** Packets of the current read being handled; the next read waits until none are. */
  _parsingBatch: number;
  /** Called as each packet's handling completes (and by resume). */
  _nextBatch: (err?: Error | null) => void;
};

/**
 * Makes aedes 1.2's pause() safe in the middle of a read. Its `nextBatch` returns early while paused,
 * dropping the completion of each packet of the current read that finishes meanwhile; after resume()
 * it then waits for completions that already happened, and never reads the connection again (until
 * the keepalive runs out). This counts those completions without reading. Installed before the first
 * packet, since aedes passes `client._nextBatch` to each packet's handler as it arrives.
 */
function countCompletionsWhilePaused(client: AedesClientInternals): void {
  const next = client._nextBatch;
  client._nextBatch = (err) => {
    if (!err && client._paused) {
      client._parsingBatch = Math.max(0, client._parsingBatch - 1);
      return;
    }
    next(err);
  };
}

const CLIENT_ID_SEPARATOR = ':';
/** How often drained limiter entries are forgotten. */
const LIMITER_SWEEP_MS = 30_000;

/** The peer address: the socket's, or for WebSocket the HTTP request's (never a forwarded header). */
function remoteAddressOf(client: Client): string | undefined {
  const conn = client.conn as { remoteAddress?: string } | undefined;
  return conn?.remoteAddress ?? client.req?.socket?.remoteAddress;
}

function authError(err: AuthError): AuthenticateError {
  return Object.assign(new Error(err.message), { returnCode: err.returnCode }) as AuthenticateError;
}

export class DeviceBroker {
  readonly aedes: Aedes;
  private readonly sessions = new WeakMap<Client, Session>();
  private readonly byDevice = new Map<string, Set<Client>>();
  /** Undefined when AUTH_FAILURES_PER_MINUTE is 0. */
  private readonly authFailures: AuthFailureLimiter | undefined;
  private readonly verifyQueue: VerifyQueue;
  /** Undefined when DEVICE_MAX_MSGS_PER_SEC is 0. */
  private readonly publishRate: TokenBuckets | undefined;
  /** Undefined when DEVICE_MAX_BYTES_PER_SEC is 0. */
  private readonly byteRate: TokenBuckets | undefined;
  /** Undefined when DEVICE_MAX_CONNECTS_PER_MIN is 0. */
  private readonly connectRate: TokenBuckets | undefined;
  private readonly sweeper: NodeJS.Timeout;
  private lastBusyWarnMs = 0;

  private constructor(
    private readonly deps: BrokerDeps,
    /** Checked for unknown devices, so that they take as long to refuse as a wrong secret. */
    private readonly decoyHash: string,
  ) {
    const { config } = deps;
    this.authFailures =
      config.AUTH_FAILURES_PER_MINUTE > 0
        ? new AuthFailureLimiter(config.AUTH_FAILURES_PER_MINUTE)
        : undefined;
    this.verifyQueue = new VerifyQueue(config.AUTH_VERIFY_CONCURRENCY, config.AUTH_VERIFY_QUEUE);
    this.publishRate =
      config.DEVICE_MAX_MSGS_PER_SEC > 0
        ? new TokenBuckets(config.DEVICE_MAX_MSGS_PER_SEC, config.DEVICE_MSGS_BURST)
        : undefined;
    this.connectRate =
      config.DEVICE_MAX_CONNECTS_PER_MIN > 0
        ? new TokenBuckets(config.DEVICE_MAX_CONNECTS_PER_MIN / 60, config.DEVICE_MAX_CONNECTS_PER_MIN)
        : undefined;
    this.byteRate =
      config.DEVICE_MAX_BYTES_PER_SEC > 0
        ? new TokenBuckets(config.DEVICE_MAX_BYTES_PER_SEC, config.DEVICE_BYTES_BURST)
        : undefined;
    deps.metrics.limitSources.blockedSources = () => this.authFailures?.blockedCount() ?? 0;
    deps.metrics.limitSources.verifyQueued = () => this.verifyQueue.queued;
    this.sweeper = setInterval(() => {
      this.authFailures?.sweep();
      this.publishRate?.sweep();
      this.byteRate?.sweep();
      this.connectRate?.sweep();
    }, LIMITER_SWEEP_MS).unref();
    this.aedes = new Aedes({
      ...deps.aedesOptions,
      id: undefined,
      maxClientsIdLength: 128,
      authenticate: (client, username, password, done) => {
        const remote = remoteAddressOf(client);
        this.authenticate(client, username, password, sourceKey(remote)).then(
          () => done(null, true),
          (err) => {
            const e =
              err instanceof AuthError
                ? err
                : err instanceof VerifyBusyError
                  ? new AuthError('server_busy', 3)
                  : new AuthError('registry_unavailable', 3);
            if (!(err instanceof AuthError) && !(err instanceof VerifyBusyError))
              deps.log.error({ err }, 'authentication failed unexpectedly');
            deps.metrics.connects.labels(e.reason).inc();
            if (e.reason === 'rate_limited') deps.metrics.limitReached('AUTH_FAILURES_PER_MINUTE');
            else if (e.reason === 'server_busy') deps.metrics.limitReached('AUTH_VERIFY_QUEUE');
            else if (e.reason === 'client_id_too_long') deps.metrics.limitReached('MAX_CLIENT_ID_BYTES');
            else if (e.reason === 'connect_rate_limited')
              deps.metrics.limitReached('DEVICE_MAX_CONNECTS_PER_MIN');
            // Refusals under a flood are counted, not logged one by one: the log would become the flood.
            const quiet =
              e.reason === 'rate_limited' ||
              e.reason === 'server_busy' ||
              e.reason === 'connect_rate_limited';
            deps.log[quiet ? 'debug' : 'warn'](
              { clientId: client.id, username, remote, reason: e.reason },
              'connection refused',
            );
            if (e.reason === 'server_busy') this.warnBusy();
            // A client id refused for its length is a failure too: a source sending them over and over
            // is refused without its CONNECTs being looked at, like one guessing secrets.
            const failure = e.reason === 'bad_credentials' || e.reason === 'client_id_too_long';
            if (failure && this.authFailures?.failed(sourceKey(remote))) {
              deps.log.warn(
                { remote, source: sourceKey(remote), perMinute: deps.config.AUTH_FAILURES_PER_MINUTE },
                'too many failed authentications from this source: refusing its CONNECTs until it cools down',
              );
            }
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
    this.aedes.on('unsubscribe', (topics, client) => {
      const held = this.sessions.get(client)?.subscriptions;
      for (const topic of topics) held?.delete(topic);
    });
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
    const broker = new DeviceBroker(deps, await hashSecret(randomBytes(24).toString('base64url')));
    await broker.aedes.listen();
    return broker;
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  /**
   * Connection listener for any transport; refuses MQTT frames above MAX_PACKET_BYTES, and a CONNECT
   * above MAX_CONNECT_BYTES, as soon as their header arrives, before buffering them.
   */
  readonly handle = (stream: Parameters<Aedes['handle']>[0], req?: Parameters<Aedes['handle']>[1]): void => {
    const client = this.aedes.handle(stream, req) as AedesClientInternals;
    countCompletionsWhilePaused(client);
    const parser = client._parser;
    if (parser === undefined) return;
    const { metrics, config } = this.deps;
    const parseLength = parser._parseLength;
    // mqtt-packet has no size limit and would buffer up to 256 MB per frame; stop at the header. A
    // CONNECT (client id, credentials, will) is read before anyone is authenticated: its bound is what
    // an unknown peer can make the gateway hold.
    parser._parseLength = function (this: typeof parser) {
      const ok = parseLength.call(this);
      if (!ok) return ok;
      const isConnect = this.packet.cmd === 'connect';
      const limit = isConnect ? config.MAX_CONNECT_BYTES : config.MAX_PACKET_BYTES;
      if (this.packet.length > limit) {
        metrics.limitReached(isConnect ? 'MAX_CONNECT_BYTES' : 'MAX_PACKET_BYTES');
        const setting = isConnect ? 'MAX_CONNECT_BYTES' : 'MAX_PACKET_BYTES';
        return this._emitError(
          new Error(`${this.packet.cmd} of ${this.packet.length} bytes exceeds ${setting} (${limit})`),
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

  close(): Promise<void> {
    clearInterval(this.sweeper);
    return new Promise((resolve) => this.aedes.close(() => resolve()));
  }

  /** One warning per minute at most while the verification queue overflows. */
  private warnBusy(): void {
    const now = Date.now();
    if (now - this.lastBusyWarnMs < 60_000) return;
    this.lastBusyWarnMs = now;
    this.deps.log.warn(
      { queued: this.verifyQueue.queued, limit: this.deps.config.AUTH_VERIFY_QUEUE },
      'secret verification queue full: refusing CONNECTs with "server unavailable"',
    );
  }

  /**
   * Counts a publish in flight until `done`, and stops reading the connection while
   * MAX_IN_FLIGHT_PER_CLIENT are: aedes alone reads on whenever more bytes arrive, so a device
   * publishing into a NATS outage (or over its rate) would otherwise pile up held publishes without
   * bound. Paused, TCP pushes back on the device; reading resumes once half of them are answered.
   */
  private holding(client: Client, done: (err?: Error | null) => void): (err?: Error | null) => void {
    const session = this.sessions.get(client);
    if (session === undefined || client.closed) return done;
    const max = this.deps.config.MAX_IN_FLIGHT_PER_CLIENT;
    session.inFlight++;
    if (session.inFlight >= max && !session.paused) {
      session.paused = true;
      this.deps.metrics.limitReached('MAX_IN_FLIGHT_PER_CLIENT');
      (client as AedesClientInternals).pause();
    }
    let once = false;
    return (err) => {
      if (once) return;
      once = true;
      session.inFlight--;
      if (session.paused && session.inFlight <= max / 2) {
        session.paused = false;
        if (!client.closed) (client as AedesClientInternals).resume();
      }
      done(err);
    };
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

  private async authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    source: string,
  ) {
    const { registry, verified, metrics, config } = this.deps;
    // The id travels in presence events and state, logs and dead letters: a long one would make each
    // of them as long. Refused before any secret is checked; it says nothing about the device.
    if (Buffer.byteLength(client.id) > config.MAX_CLIENT_ID_BYTES)
      throw new AuthError('client_id_too_long', 2);
    if (registry === undefined) {
      const deviceId = username !== undefined && isDeviceId(username) ? username : undefined;
      const identity = deviceId ? deviceIdentity(deviceId, DEFAULT_TENANT, {}) : undefined;
      if (deviceId !== undefined) this.admitConnect(deviceId);
      this.sessions.set(client, newSession(identity));
      metrics.connects.labels('accepted_open').inc();
      return;
    }
    // Before any scrypt: a source guessing secrets gets no more work out of the gateway. "Server
    // unavailable" rather than "not authorized", so that a good device behind the same NAT retries.
    if (this.authFailures?.blocked(source)) throw new AuthError('rate_limited', 3);
    if (username === undefined || !isDeviceId(username) || password === undefined) {
      throw new AuthError('bad_credentials', 4);
    }
    const record = registry.get(username);
    const slot = <T>(task: () => Promise<T>) => this.verifyQueue.run(task);
    const wanted = () => !client.closed;
    // Unknown device and wrong secret answer alike, in about the same time, and nothing else about
    // a device (disabled, its client id rule) is revealed before its secret checks out: ids cannot be probed.
    if (record === undefined) {
      await verified.verify('', this.decoyHash, password, slot, wanted);
      throw new AuthError('bad_credentials', 4);
    }
    if (!(await verified.verify(record.id, record.secretHash, password, slot, wanted)))
      throw new AuthError('bad_credentials', 4);
    const now = registry.get(username);
    if (now === undefined || now.secretHash !== record.secretHash) throw new AuthError('bad_credentials', 4);
    if (now.disabled) throw new AuthError('disabled', 5);
    // A client id names a session; tying it to the device makes cross-device takeover impossible.
    if (client.id !== username && !client.id.startsWith(username + CLIENT_ID_SEPARATOR)) {
      throw new AuthError('client_id_rejected', 2);
    }
    this.admitConnect(now.id);
    this.sessions.set(client, newSession(deviceIdentity(now.id, now.tenant, now.labels)));
    metrics.connects.labels('accepted').inc();
  }

  /**
   * A device's accepted connections a minute (DEVICE_MAX_CONNECTS_PER_MIN, all its client ids). Every
   * connection costs a `connected` and a `lost` presence event and its will: a device reconnecting in
   * a loop would otherwise fill PRESENCE at a thousand events a second. Taken only once the secret
   * checks out, so nobody else can spend a device's allowance; "server unavailable" makes clients
   * back off and retry.
   */
  private admitConnect(deviceId: string): void {
    if (this.connectRate !== undefined && !this.connectRate.tryTake(deviceId))
      throw new AuthError('connect_rate_limited', 3);
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
    done = this.holding(client, done);
    const { metrics } = this.deps;
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
    const wait = this.budget(client, identity.deviceId, packet);
    if (wait === undefined && client.closed) {
      // A will the device has no budget left for: dropped, counted in the limits.
      metrics.publish('throttled', packet.qos);
      done(new PublishRateError(identity.deviceId));
      return;
    }
    if (wait === undefined || wait > 0) {
      this.throttle(client, identity.deviceId, packet, wait, done);
      return;
    }
    this.ingest(client, identity, topic.kind, packet, done);
  }

  /**
   * What a publish must wait for the device's budgets: publishes and payload bytes a second, over all
   * its connections (undefined: a whole burst in debt). Bytes bound what the device makes the gateway
   * parse and store: a few large batches cost as much as many small publishes. A closed client's
   * publish is its last will, which is not held back.
   */
  private budget(client: Client, deviceId: string, packet: PublishPacket): number | undefined {
    const { metrics } = this.deps;
    // The topic too: up to 64 KiB of it is parsed and checked like the payload.
    const bytes =
      packet.topic.length +
      (typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length);
    if (client.closed) return this.willBudget(deviceId, bytes);
    const forPublish = this.publishRate === undefined ? 0 : this.publishRate.take(deviceId);
    if (forPublish !== 0) metrics.limitReached('DEVICE_MAX_MSGS_PER_SEC');
    const forBytes = this.byteRate === undefined ? 0 : this.byteRate.take(deviceId, bytes);
    if (forBytes !== 0) metrics.limitReached('DEVICE_MAX_BYTES_PER_SEC');
    return forPublish === undefined || forBytes === undefined ? undefined : Math.max(forPublish, forBytes);
  }

  /**
   * A closed client's publish is its last will: nobody waits for it, so it is not held back, but it
   * pays like any publish; a device out of budget has its will dropped (counted). Otherwise wills
   * would be a way round every rate: a device reconnecting in a loop with a will on its telemetry
   * topic stored 1,200 readings a second against a limit of 100.
   */
  private willBudget(deviceId: string, bytes: number): number | undefined {
    const { metrics } = this.deps;
    if (this.publishRate !== undefined && !this.publishRate.tryTake(deviceId)) {
      metrics.limitReached('DEVICE_MAX_MSGS_PER_SEC');
      return undefined;
    }
    if (this.byteRate !== undefined && !this.byteRate.tryTake(deviceId, bytes)) {
      metrics.limitReached('DEVICE_MAX_BYTES_PER_SEC');
      return undefined;
    }
    return 0;
  }

  /**
   * Over the device's rate, a publish waits for its token: throttled, not refused. It stays in
   * flight meanwhile, so past MAX_IN_FLIGHT_PER_CLIENT the connection is not read and TCP slows
   * the device down. A device a whole burst in debt is not slowing down: the connection is closed,
   * this publish unacknowledged (the device still has it and sends it again).
   */
  private throttle(
    client: Client,
    deviceId: string,
    packet: PublishPacket,
    wait: number | undefined,
    done: (err?: Error | null) => void,
  ): void {
    const { metrics, log } = this.deps;
    if (wait === undefined) {
      metrics.throttled('disconnected');
      metrics.publish('throttled', packet.qos);
      log.warn(
        {
          clientId: client.id,
          device: deviceId,
          perSec: this.deps.config.DEVICE_MAX_MSGS_PER_SEC,
          bytesPerSec: this.deps.config.DEVICE_MAX_BYTES_PER_SEC,
        },
        'publishing far above the rate limit: disconnecting',
      );
      this.markLost(client, 'publish rate limit');
      done(new PublishRateError(deviceId));
      return;
    }
    metrics.throttled('delayed');
    setTimeout(() => {
      // A QoS 0 publish that waited its turn is stored even if the connection was cut meanwhile: it
      // was within the rate. A QoS 1/2 one is left unacknowledged, and the device sends it again.
      if (client.closed && packet.qos > 0) {
        metrics.publish('not_stored', packet.qos);
        done(new Error('connection closed while throttled'));
        return;
      }
      this.guarded(
        client,
        () => {
          const topic = parseDeviceTopic(packet.topic);
          const identity = this.sessions.get(client)?.identity;
          if (topic === undefined || identity === undefined)
            throw new Error('throttled publish lost its identity');
          this.ingest(client, identity, topic.kind, packet, done);
        },
        done,
      );
    }, wait);
  }

  private ingest(
    client: Client,
    identity: DeviceIdentity,
    kind: NonNullable<ReturnType<typeof parseDeviceTopic>>['kind'],
    packet: PublishPacket,
    done: (err?: Error | null) => void,
  ): void {
    const { telemetry, presence, metrics } = this.deps;
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
    const msg = {
      topic: packet.topic,
      payload,
      qos,
      packetId: packet.messageId,
      dup: packet.dup === true,
      clientId: client.id,
    };
    switch (kind) {
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
            ...presence.status(payload),
          },
          (err) => finish(err as NotStoredError | undefined),
        );
        return;
      default: {
        const rejection = reject(
          'TOPIC_UNKNOWN',
          `'${packet.topic.slice(0, 256)}' is not a topic of the device contract`,
        );
        telemetry.rejectMessage(identity, msg, rejection, wanted, finish);
      }
    }
  }

  private authorizeSubscribe(
    client: Client,
    sub: Subscription,
    done: (err: Error | null, sub?: Subscription | null) => void,
  ): void {
    const session = this.sessions.get(client);
    const cap = this.deps.config.MAX_SUBSCRIPTIONS_PER_CLIENT;
    if (session === undefined) {
      done(null, null);
      return;
    }
    // Refused filters count too: thousands of them would otherwise cost a log line each, forever.
    if (
      !session.subscriptions.has(sub.topic) &&
      session.subscriptions.size + session.refusedSubscriptions >= cap
    ) {
      if (!client.closed) {
        this.deps.metrics.subscriptionLimit.inc();
        this.deps.metrics.limitReached('MAX_SUBSCRIPTIONS_PER_CLIENT');
        this.deps.log.warn({ clientId: client.id, limit: cap }, 'too many subscriptions: disconnecting');
        this.markLost(client, 'subscription limit');
      }
      done(new SubscriptionLimitError(cap, client.id));
      return;
    }
    const owner = commandsFilterOwner(sub.topic);
    const identity = this.identityFor(client, owner);
    if (owner === undefined || identity === undefined || owner !== identity.deviceId) {
      session.refusedSubscriptions++;
      this.deny(client, 'subscribe', sub.topic);
      // [MQTT-3.9.3] SUBACK return code 0x80: the subscription fails, the connection stays.
      done(null, null);
      return;
    }
    session.subscriptions.add(sub.topic);
    done(null, sub);
  }

  /**
   * Adds a device's connection, closing its oldest ones past MAX_CONNECTIONS_PER_DEVICE. The oldest,
   * not the new one: a device whose network dropped reconnects before the gateway notices, and must
   * not be locked out by its own dead connections.
   */
  private track(client: Client, deviceId: string): void {
    let set = this.byDevice.get(deviceId);
    if (!set) {
      set = new Set();
      this.byDevice.set(deviceId, set);
    }
    const max = this.deps.config.MAX_CONNECTIONS_PER_DEVICE;
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
