import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { boundClients } from '../../common/http-server.js';
import type { Logger } from '../../common/logger.js';
import { DEFAULT_TENANT } from '../../contract/ids.js';
import { type PayloadEncoding, telemetryTopic } from '../../contract/topics.js';
import type { Authenticator } from '../broker/authentication.js';
import type { PublishBudgets } from '../broker/publish-budget.js';
import type { GatewayConfig } from '../config.js';
import { AuthError, VerifyBusyError } from '../errors.js';
import {
  type DeviceIdentity,
  deviceIdentity,
  readingOutcomes,
  type TelemetryHandler,
} from '../ingest/telemetry-handler.js';
import { ConnectDeadlines } from '../limits/connect-deadline.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PresencePublisher } from '../presence.js';
import { type Answer, failure, telemetryAnswer } from './answer.js';
import { parseBasicAuth } from './basic-auth.js';
import { bodyEncoding, type IngestRoute, parseRoute } from './route.js';

export interface HttpIngestDeps {
  config: Pick<
    GatewayConfig,
    | 'AUTH_MODE'
    | 'MAX_PAYLOAD_BYTES'
    | 'MAX_CONNECTIONS'
    | 'MAX_IN_FLIGHT_PER_CLIENT'
    | 'ACK_TIMEOUT_MS'
    | 'AUTH_FAILURES_PER_MINUTE'
    | 'DEVICE_MAX_MSGS_PER_SEC'
    | 'DEVICE_MSGS_BURST'
    | 'DEVICE_MAX_BYTES_PER_SEC'
    | 'DEVICE_BYTES_BURST'
    | 'HTTP_INGEST_READ_TIMEOUT_MS'
    | 'HTTP_INGEST_STORE_TIMEOUT_MS'
    | 'HTTP_INGEST_KEEPALIVE_MS'
  >;
  /** The broker's, so that a device's failures, secrets remembered and budgets hold over both transports. */
  auth: Pick<Authenticator, 'authenticateRequest'>;
  budgets: Pick<PublishBudgets, 'take'>;
  telemetry: Pick<TelemetryHandler, 'handle'>;
  presence: Pick<PresencePublisher, 'publish' | 'status'>;
  /** False while the gateway cannot reach NATS: requests are then answered 503 at once. */
  natsConnected: () => boolean;
  metrics: Pick<GatewayMetrics, 'httpRequest' | 'httpReadings' | 'limitReached'>;
  log: Logger;
  /** HTTPS with this certificate (HTTP_INGEST_TLS); plain HTTP without. */
  tls?: { cert: Buffer; key: Buffer };
}

/** An Idempotency-Key longer than this is refused as no key: a UUID is 36 characters. */
const MAX_IDEMPOTENCY_KEY_CHARS = 256;

/** A request in the making: its own state, passed through the steps. */
interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  route: IngestRoute | undefined;
  /** True once the client went away or the answer was sent. */
  gone: boolean;
  /** The server's requests being served, by device. */
  inFlight: Map<string, number>;
}

/**
 * `POST /v1/devices/{id}/telemetry` and `/status` on HTTP_INGEST_PORT: the body goes where an MQTT
 * payload on that topic goes (TelemetryHandler, PresencePublisher), and the answer comes once
 * JetStream has stored all of it. A request is a list of steps: route, media type, declared size,
 * credentials, NATS, body (bounded), the device's budgets, store.
 */
export function createHttpIngestServer(deps: HttpIngestDeps): Server | HttpsServer {
  const { config, metrics, log } = deps;
  const options = {
    headersTimeout: config.HTTP_INGEST_READ_TIMEOUT_MS,
    requestTimeout: config.HTTP_INGEST_READ_TIMEOUT_MS,
    keepAliveTimeout: config.HTTP_INGEST_KEEPALIVE_MS,
    connectionsCheckingInterval: Math.min(1_000, Math.ceil(config.HTTP_INGEST_READ_TIMEOUT_MS / 4)),
  };
  const inFlight = new Map<string, number>();
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const x: Exchange = { req, res, route: parseRoute(req.url), gone: false, inFlight };
    res.once('close', () => {
      x.gone = true;
    });
    serve(deps, x).catch((err: unknown) => {
      log.error({ err }, 'HTTP ingest request failed unexpectedly (a bug)');
      send(deps, x, failure(503, 'NOT_STORED', 'the gateway failed on this request; send it again', 1));
    });
  };
  const server =
    deps.tls === undefined
      ? createServer(options, onRequest)
      : createHttpsServer({ ...options, ...deps.tls, minVersion: 'TLSv1.2' }, onRequest);
  if (deps.tls !== undefined) boundHandshakes(server as HttpsServer, deps);
  // `Expect: 100-continue` (curl's for large bodies; devices paying per byte): every check runs
  // before the body is asked for, so a refused request's body is never sent.
  server.on('checkContinue', onRequest);
  boundClients(server, {
    maxConnections: config.MAX_CONNECTIONS,
    dropped: () => metrics.limitReached('MAX_CONNECTIONS'),
    timedOut: () => metrics.limitReached('HTTP_INGEST_READ_TIMEOUT_MS'),
  });
  return server;
}

/**
 * A TLS handshake, like the MQTT listeners' (gateway/limits/connect-deadline.ts), gets
 * HTTP_INGEST_READ_TIMEOUT_MS from accept: Node's handshakeTimeout does not close a silent socket,
 * and the HTTP timeouts start only once the handshake is done.
 */
function boundHandshakes(server: HttpsServer, deps: HttpIngestDeps): void {
  const deadlines = new ConnectDeadlines(deps.config.HTTP_INGEST_READ_TIMEOUT_MS, () =>
    deps.metrics.limitReached('HTTP_INGEST_READ_TIMEOUT_MS'),
  );
  server.prependListener('connection', (socket: Socket) => deadlines.arm(socket, 'HTTP_INGEST_PORT'));
  server.on('secureConnection', (socket) => deadlines.met(socket));
}

async function serve(deps: HttpIngestDeps, x: Exchange): Promise<void> {
  const { config } = deps;
  const { req, route } = x;
  if (route === undefined) return send(deps, x, failure(404, 'NOT_FOUND', 'no such route'), true);
  if (req.method !== 'POST')
    return send(
      deps,
      x,
      { ...failure(405, 'METHOD_NOT_ALLOWED', 'only POST'), headers: { allow: 'POST' } },
      true,
    );
  if (bodyEncoding(req.headers['content-type']) === undefined)
    return send(
      deps,
      x,
      failure(
        415,
        'UNSUPPORTED_MEDIA_TYPE',
        `Content-Type ${req.headers['content-type']}: application/json or application/cbor (curl -d sends a form type: add -H 'content-type: application/json')`,
      ),
      true,
    );
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > config.MAX_PAYLOAD_BYTES) return tooLarge(deps, x);

  const identity = await authenticate(deps, x, route);
  if (identity === undefined) return;
  // Fail fast: held requests would only pile up while NATS is away, and nothing is stored meanwhile.
  if (!deps.natsConnected())
    return send(
      deps,
      x,
      failure(503, 'NATS_UNAVAILABLE', 'NATS unreachable: nothing stored', retryAfterS(config)),
      true,
    );

  // A device's requests at once, as its MQTT connection's publishes in flight: bodies held, stores open.
  const held = x.inFlight.get(identity.deviceId) ?? 0;
  if (held >= config.MAX_IN_FLIGHT_PER_CLIENT) {
    deps.metrics.limitReached('MAX_IN_FLIGHT_PER_CLIENT');
    return send(
      deps,
      x,
      failure(
        429,
        'RATE_LIMITED',
        `more than ${config.MAX_IN_FLIGHT_PER_CLIENT} requests of this device at once`,
        1,
      ),
      true,
    );
  }
  x.inFlight.set(identity.deviceId, held + 1);
  try {
    if (x.req.headers.expect?.toLowerCase() === '100-continue') x.res.writeContinue();
    const body = await readBody(x, config.MAX_PAYLOAD_BYTES);
    if (body === 'gone') return;
    if (body === 'too large') return tooLarge(deps, x);
    if (!(await withinBudget(deps, x, identity, body.byteLength))) return;
    await (route.kind === 'status'
      ? storeStatus(deps, x, identity, body)
      : storeTelemetry(deps, x, identity, body, bodyEncoding(x.req.headers['content-type']) ?? 'json'));
  } finally {
    const left = (x.inFlight.get(identity.deviceId) ?? 1) - 1;
    if (left > 0) x.inFlight.set(identity.deviceId, left);
    else x.inFlight.delete(identity.deviceId);
  }
}

/** The device the request is for, as its credentials prove (AUTH_MODE=open: as its path says). */
async function authenticate(
  deps: HttpIngestDeps,
  x: Exchange,
  route: IngestRoute,
): Promise<DeviceIdentity | undefined> {
  const { config } = deps;
  if (config.AUTH_MODE === 'open') return deviceIdentity(route.deviceId, DEFAULT_TENANT, {});
  const credentials = parseBasicAuth(x.req.headers.authorization);
  try {
    if (credentials === undefined) throw new AuthError('bad_credentials', 4);
    const identity = await deps.auth.authenticateRequest(
      credentials.username,
      credentials.password,
      x.req.socket.remoteAddress,
      () => !x.gone,
    );
    if (identity.deviceId !== route.deviceId) {
      send(deps, x, failure(403, 'FORBIDDEN', 'these credentials are for another device'), true);
      return undefined;
    }
    return identity;
  } catch (err) {
    if (!(err instanceof AuthError) && !(err instanceof VerifyBusyError))
      deps.log.error({ err }, 'HTTP ingest authentication failed unexpectedly');
    send(deps, x, refusal(config, err), true);
    return undefined;
  }
}

function refusal(config: HttpIngestDeps['config'], err: unknown): Answer {
  if (err instanceof VerifyBusyError) return failure(503, 'SERVER_BUSY', 'too many secret checks waiting', 1);
  if (!(err instanceof AuthError)) return failure(503, 'SERVER_BUSY', 'credentials could not be checked', 1);
  switch (err.reason) {
    case 'disabled':
      return failure(403, 'FORBIDDEN', 'the device is disabled');
    case 'rate_limited':
      return failure(
        429,
        'RATE_LIMITED',
        'too many failed authentications from this address',
        Math.ceil(60 / Math.max(1, config.AUTH_FAILURES_PER_MINUTE)),
      );
    case 'server_busy':
    case 'registry_unavailable':
      return failure(503, 'SERVER_BUSY', 'credentials could not be checked now', 1);
    default: {
      const answer = failure(401, 'UNAUTHORIZED', 'HTTP Basic with the device id and its secret');
      answer.headers = { 'www-authenticate': 'Basic realm="devices", charset="UTF-8"' };
      return answer;
    }
  }
}

/** The body, at most `maxBytes` of it (counted as it comes, whatever Content-Length said). */
function readBody(x: Exchange, maxBytes: number): Promise<Buffer | 'too large' | 'gone'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const finish = (result: Buffer | 'too large' | 'gone') => {
      x.req.off('data', onData).off('end', onEnd).off('error', onGone).off('aborted', onGone);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.byteLength;
      if (bytes > maxBytes) {
        x.req.pause();
        finish('too large');
      } else chunks.push(chunk);
    };
    const onEnd = () => finish(Buffer.concat(chunks, bytes));
    const onGone = () => finish('gone');
    x.req.on('data', onData).on('end', onEnd).on('error', onGone).on('aborted', onGone);
  });
}

function tooLarge(deps: HttpIngestDeps, x: Exchange): void {
  deps.metrics.limitReached('MAX_PAYLOAD_BYTES');
  send(
    deps,
    x,
    failure(
      413,
      'PAYLOAD_TOO_LARGE',
      `body larger than ${deps.config.MAX_PAYLOAD_BYTES} bytes (MAX_PAYLOAD_BYTES)`,
    ),
    true,
  );
}

/**
 * The device's budgets, the ones its MQTT publishes draw on: a request slightly over waits for its
 * tokens, as a publish does; one a whole burst in debt is answered 429 (MQTT closes the connection).
 */
async function withinBudget(
  deps: HttpIngestDeps,
  x: Exchange,
  identity: DeviceIdentity,
  bytes: number,
): Promise<boolean> {
  const topic = telemetryTopic(identity.deviceId);
  const wait = deps.budgets.take(identity.deviceId, topic.length + bytes);
  if (wait === undefined) {
    send(
      deps,
      x,
      failure(429, 'RATE_LIMITED', 'the device sends far above its rate limit', budgetRefillS(deps.config)),
    );
    return false;
  }
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  return !x.gone;
}

/** Resolves once answered. */
function storeTelemetry(
  deps: HttpIngestDeps,
  x: Exchange,
  identity: DeviceIdentity,
  body: Buffer,
  encoding: PayloadEncoding,
): Promise<void> {
  const { config, metrics } = deps;
  const deadline = Date.now() + config.HTTP_INGEST_STORE_TIMEOUT_MS;
  const outcomes = readingOutcomes();
  const key = x.req.headers['idempotency-key'];
  const msg = {
    topic: telemetryTopic(identity.deviceId, encoding),
    payload: body,
    encoding,
    qos: 1 as const,
    packetId: undefined,
    dup: false,
    clientId: `${identity.deviceId}:http`,
    ...(typeof key === 'string' && key.length > 0 && key.length <= MAX_IDEMPOTENCY_KEY_CHARS
      ? { name: idempotencyName(identity, key) }
      : {}),
  };
  return new Promise((answered) =>
    deps.telemetry.handle(
      identity,
      msg,
      // Retried while the client waits and the deadline allows: then given up, and answered 503.
      () => !x.gone && Date.now() < deadline,
      (err) => {
        if (err && Date.now() >= deadline) metrics.limitReached('HTTP_INGEST_STORE_TIMEOUT_MS');
        metrics.httpReadings('stored', outcomes.stored);
        metrics.httpReadings('duplicate', outcomes.duplicates);
        metrics.httpReadings('rejected', outcomes.rejected.length);
        metrics.httpReadings('unconfirmed', outcomes.unconfirmed.length);
        send(deps, x, telemetryAnswer(outcomes, err === undefined, retryAfterS(config)));
        answered();
      },
      outcomes,
    ),
  );
}

/** Resolves once answered. */
function storeStatus(
  deps: HttpIngestDeps,
  x: Exchange,
  identity: DeviceIdentity,
  body: Buffer,
): Promise<void> {
  const { config, presence } = deps;
  const deadline = Date.now() + config.HTTP_INGEST_STORE_TIMEOUT_MS;
  return new Promise((answered) =>
    presence.publish(
      {
        tenant: identity.tenant,
        deviceId: identity.deviceId,
        clientId: `${identity.deviceId}:http`,
        type: 'status',
        ...presence.status(body),
      },
      (err) => {
        send(
          deps,
          x,
          err
            ? failure(503, 'NOT_STORED', 'the status was not stored; send it again', retryAfterS(config))
            : { status: 200, body: { stored: 1 } },
        );
        answered();
      },
      () => !x.gone && Date.now() < deadline,
    ),
  );
}

/**
 * The publish name of a request with an Idempotency-Key: the same key from the same device names the
 * same publish, so a repeated request's readings without `ts` get the ids they had (within
 * DEDUP_WINDOW_MS). Hashed: the key is the client's text, a message id must be plain.
 */
function idempotencyName(identity: DeviceIdentity, key: string): string {
  const digest = createHash('sha256').update(identity.tenant).update('\0').update(identity.deviceId);
  return `k${digest.update('\0').update(key).digest('base64url').slice(0, 27)}`;
}

function retryAfterS(config: HttpIngestDeps['config']): number {
  return Math.max(1, Math.ceil(config.ACK_TIMEOUT_MS / 1000));
}

/** How long a device's budgets take to refill from empty. */
function budgetRefillS(config: HttpIngestDeps['config']): number {
  const msgs =
    config.DEVICE_MAX_MSGS_PER_SEC > 0 ? config.DEVICE_MSGS_BURST / config.DEVICE_MAX_MSGS_PER_SEC : 0;
  const bytes =
    config.DEVICE_MAX_BYTES_PER_SEC > 0 ? config.DEVICE_BYTES_BURST / config.DEVICE_MAX_BYTES_PER_SEC : 0;
  return Math.max(1, Math.ceil(Math.max(msgs, bytes)));
}

/**
 * Sends an answer, once, if the client is still there. `close`: the body may not have been read, and
 * reading a large one only to throw it away would cost more than a new connection.
 */
function send(deps: HttpIngestDeps, x: Exchange, answer: Answer, close = false): void {
  const route = x.route?.kind ?? 'other';
  deps.metrics.httpRequest(route, answer.status);
  if (x.gone || x.res.headersSent) return;
  const body = JSON.stringify(answer.body);
  x.res.writeHead(answer.status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...(close ? { connection: 'close' } : {}),
    ...answer.headers,
  });
  x.res.end(body);
}
