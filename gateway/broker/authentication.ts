import { randomBytes } from 'node:crypto';
import type { AuthenticateError, Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { DEFAULT_TENANT, isDeviceId } from '../../contract/ids.js';
import type { GatewayConfig } from '../config.js';
import { AuthError, VerifyBusyError } from '../errors.js';
import { type DeviceIdentity, deviceIdentity } from '../ingest/telemetry-handler.js';
import { AuthFailureLimiter, sourceKey } from '../limits/auth-failures.js';
import { TokenBuckets } from '../limits/token-buckets.js';
import { VerifyQueue } from '../limits/verify-queue.js';
import type { GatewayMetrics } from '../metrics.js';
import type { RegistryCache } from '../registry/registry-cache.js';
import { hashSecret, type VerifiedSecrets } from '../registry/secrets.js';

const CLIENT_ID_SEPARATOR = ':';
/** At most one "verification queue full" warning this often. */
const BUSY_WARN_INTERVAL_MS = 60_000;

export interface AuthenticationDeps {
  config: Pick<
    GatewayConfig,
    | 'MAX_CLIENT_ID_BYTES'
    | 'AUTH_FAILURES_PER_MINUTE'
    | 'AUTH_VERIFY_CONCURRENCY'
    | 'AUTH_VERIFY_QUEUE'
    | 'DEVICE_MAX_CONNECTS_PER_MIN'
  >;
  /** Undefined in AUTH_MODE=open. */
  registry: Pick<RegistryCache, 'get'> | undefined;
  verified: VerifiedSecrets;
  metrics: Pick<GatewayMetrics, 'connects' | 'limitReached' | 'limitSources'>;
  log: Logger;
}

/** What authentication needs of a client: its id, whether it is gone, and its peer's address. */
export type AuthenticatingClient = Pick<Client, 'id' | 'closed' | 'conn' | 'req'>;

/** The peer address: the socket's, or for WebSocket the HTTP request's (never a forwarded header). */
export function remoteAddressOf(client: Pick<Client, 'conn' | 'req'>): string | undefined {
  const conn = client.conn as { remoteAddress?: string } | undefined;
  return conn?.remoteAddress ?? client.req?.socket?.remoteAddress;
}

/** Refusals under a flood are counted, not logged one by one: the log would become the flood. */
const QUIET_REFUSALS: ReadonlySet<AuthError['reason']> = new Set([
  'rate_limited',
  'server_busy',
  'connect_rate_limited',
]);

/** The setting whose bound a refusal reached, if one did. */
const REFUSAL_LIMITS: Partial<Record<AuthError['reason'], Parameters<GatewayMetrics['limitReached']>[0]>> = {
  rate_limited: 'AUTH_FAILURES_PER_MINUTE',
  server_busy: 'AUTH_VERIFY_QUEUE',
  client_id_too_long: 'MAX_CLIENT_ID_BYTES',
  connect_rate_limited: 'DEVICE_MAX_CONNECTS_PER_MIN',
};

/**
 * aedes' authenticate: who a CONNECT is, or why it is refused (AuthError's CONNACK code). Bounds what
 * a CONNECT can cost: per source, failed attempts (AUTH_FAILURES_PER_MINUTE); for all, secret checks
 * waiting (AUTH_VERIFY_QUEUE); per device, accepted connections (DEVICE_MAX_CONNECTS_PER_MIN).
 */
export class Authenticator {
  /** Undefined when AUTH_FAILURES_PER_MINUTE is 0. */
  private readonly authFailures: AuthFailureLimiter | undefined;
  private readonly verifyQueue: VerifyQueue;
  /** Undefined when DEVICE_MAX_CONNECTS_PER_MIN is 0. */
  private readonly connectRate: TokenBuckets | undefined;
  private lastBusyWarnMs = Number.NEGATIVE_INFINITY;

  private constructor(
    private readonly deps: AuthenticationDeps,
    /** Checked for unknown devices, so that they take as long to refuse as a wrong secret. */
    private readonly decoyHash: string,
  ) {
    const { config } = deps;
    this.authFailures =
      config.AUTH_FAILURES_PER_MINUTE > 0
        ? new AuthFailureLimiter(config.AUTH_FAILURES_PER_MINUTE)
        : undefined;
    this.verifyQueue = new VerifyQueue(config.AUTH_VERIFY_CONCURRENCY, config.AUTH_VERIFY_QUEUE);
    this.connectRate =
      config.DEVICE_MAX_CONNECTS_PER_MIN > 0
        ? new TokenBuckets(config.DEVICE_MAX_CONNECTS_PER_MIN / 60, config.DEVICE_MAX_CONNECTS_PER_MIN)
        : undefined;
    deps.metrics.limitSources.blockedSources = () => this.authFailures?.blockedCount() ?? 0;
    deps.metrics.limitSources.verifyQueued = () => this.verifyQueue.queued;
  }

  static async create(deps: AuthenticationDeps): Promise<Authenticator> {
    return new Authenticator(deps, await hashSecret(randomBytes(24).toString('base64url')));
  }

  /** Forgets sources and devices whose limits have drained. */
  sweep(): void {
    this.authFailures?.sweep();
    this.connectRate?.sweep();
  }

  /**
   * The identity a CONNECT authenticates as (undefined: an open-mode client bound by its first
   * device topic), or a rejection with the AuthenticateError aedes answers it with, counted and logged.
   */
  async authenticate(
    client: AuthenticatingClient,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<DeviceIdentity | undefined> {
    const remote = remoteAddressOf(client);
    try {
      return await this.check(client, username, password, sourceKey(remote));
    } catch (err) {
      throw this.refused(client, username, remote, err);
    }
  }

  private async check(
    client: AuthenticatingClient,
    username: string | undefined,
    password: Buffer | undefined,
    source: string,
  ): Promise<DeviceIdentity | undefined> {
    const { registry, metrics, config } = this.deps;
    // The id travels in presence events and state, logs and dead letters: a long one would make each
    // of them as long. Refused before any secret is checked; it says nothing about the device.
    if (Buffer.byteLength(client.id) > config.MAX_CLIENT_ID_BYTES)
      throw new AuthError('client_id_too_long', 2);
    if (registry === undefined) {
      const deviceId = username !== undefined && isDeviceId(username) ? username : undefined;
      const identity = deviceId ? deviceIdentity(deviceId, DEFAULT_TENANT, {}) : undefined;
      if (deviceId !== undefined) this.admitConnect(deviceId);
      metrics.connects.labels('accepted_open').inc();
      return identity;
    }
    const now = await this.verifySecret(registry, username, password, source, () => !client.closed);
    // A client id names a session; tying it to the device makes cross-device takeover impossible.
    if (client.id !== now.id && !client.id.startsWith(now.id + CLIENT_ID_SEPARATOR)) {
      throw new AuthError('client_id_rejected', 2);
    }
    this.admitConnect(now.id);
    metrics.connects.labels('accepted').inc();
    return deviceIdentity(now.id, now.tenant, now.labels, now.gateway);
  }

  /**
   * A device's credentials checked against the registry, as a CONNECT's and an HTTP request's are:
   * its record once the secret checks out, else an AuthError. A remembered success costs a SHA-256.
   */
  private async verifySecret(
    registry: NonNullable<AuthenticationDeps['registry']>,
    username: string | undefined,
    password: Buffer | undefined,
    source: string,
    wanted: () => boolean,
  ) {
    const { verified } = this.deps;
    // Before any scrypt: a source guessing secrets gets no more work out of the gateway. "Server
    // unavailable" rather than "not authorized", so that a good device behind the same NAT retries.
    if (this.authFailures?.blocked(source)) throw new AuthError('rate_limited', 3);
    if (username === undefined || !isDeviceId(username) || password === undefined) {
      throw new AuthError('bad_credentials', 4);
    }
    const record = registry.get(username);
    const slot = <T>(task: () => Promise<T>) => this.verifyQueue.run(task);
    // Unknown device and wrong secret answer alike, in about the same time, and nothing else about
    // a device (disabled, its client id rule) is revealed before its secret checks out: ids cannot be probed.
    // A child registered through a gateway device has no secret: refused as an unknown device is.
    if (record === undefined || record.secretHash === '') {
      await verified.verify('', this.decoyHash, password, slot, wanted);
      throw new AuthError('bad_credentials', 4);
    }
    if (!(await verified.verify(record.id, record.secretHash, password, slot, wanted)))
      throw new AuthError('bad_credentials', 4);
    const now = registry.get(username);
    if (now === undefined || now.secretHash !== record.secretHash) throw new AuthError('bad_credentials', 4);
    if (now.disabled) throw new AuthError('disabled', 5);
    return now;
  }

  /**
   * An HTTP request's Basic credentials, with the same checks and bounds as a CONNECT's (failures per
   * source, the verification queue, remembered successes), without the client id rule or the connect
   * rate, which are about MQTT sessions. The identity, or an AuthError (VerifyBusyError: queue full).
   * Only in AUTH_MODE=registry.
   */
  async authenticateRequest(
    username: string | undefined,
    password: Buffer | undefined,
    remote: string | undefined,
    wanted: () => boolean,
  ): Promise<DeviceIdentity> {
    const { registry, metrics, log, config } = this.deps;
    if (registry === undefined) throw new Error('authenticateRequest needs the registry');
    const source = sourceKey(remote);
    try {
      const now = await this.verifySecret(registry, username, password, source, wanted);
      return deviceIdentity(now.id, now.tenant, now.labels, now.gateway);
    } catch (err) {
      if (err instanceof AuthError && err.reason === 'bad_credentials' && this.authFailures?.failed(source))
        log.warn(
          { remote, source, perMinute: config.AUTH_FAILURES_PER_MINUTE },
          'too many failed authentications from this source: refusing its requests until it cools down',
        );
      const reason =
        err instanceof VerifyBusyError ? 'server_busy' : err instanceof AuthError ? err.reason : undefined;
      const limit = reason === undefined ? undefined : REFUSAL_LIMITS[reason];
      if (limit !== undefined) metrics.limitReached(limit);
      if (reason === 'server_busy') this.warnBusy();
      throw err;
    }
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

  /** Counts and logs a refusal, and turns it into what aedes answers the CONNECT with. */
  private refused(
    client: AuthenticatingClient,
    username: string | undefined,
    remote: string | undefined,
    err: unknown,
  ): AuthenticateError {
    const { metrics, log, config } = this.deps;
    const e =
      err instanceof AuthError
        ? err
        : err instanceof VerifyBusyError
          ? new AuthError('server_busy', 3)
          : new AuthError('registry_unavailable', 3);
    if (!(err instanceof AuthError) && !(err instanceof VerifyBusyError))
      log.error({ err }, 'authentication failed unexpectedly');
    metrics.connects.labels(e.reason).inc();
    const limit = REFUSAL_LIMITS[e.reason];
    if (limit !== undefined) metrics.limitReached(limit);
    log[QUIET_REFUSALS.has(e.reason) ? 'debug' : 'warn'](
      { clientId: client.id, username, remote, reason: e.reason },
      'connection refused',
    );
    if (e.reason === 'server_busy') this.warnBusy();
    // A client id refused for its length is a failure too: a source sending them over and over
    // is refused without its CONNECTs being looked at, like one guessing secrets.
    const failure = e.reason === 'bad_credentials' || e.reason === 'client_id_too_long';
    if (failure && this.authFailures?.failed(sourceKey(remote))) {
      log.warn(
        { remote, source: sourceKey(remote), perMinute: config.AUTH_FAILURES_PER_MINUTE },
        'too many failed authentications from this source: refusing its CONNECTs until it cools down',
      );
    }
    return Object.assign(new Error(e.message), { returnCode: e.returnCode }) as AuthenticateError;
  }

  /** One warning per minute at most while the verification queue overflows. */
  private warnBusy(): void {
    const now = Date.now();
    if (now - this.lastBusyWarnMs < BUSY_WARN_INTERVAL_MS) return;
    this.lastBusyWarnMs = now;
    this.deps.log.warn(
      { queued: this.verifyQueue.queued, limit: this.deps.config.AUTH_VERIFY_QUEUE },
      'secret verification queue full: refusing CONNECTs with "server unavailable"',
    );
  }
}
