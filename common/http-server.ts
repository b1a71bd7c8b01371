import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

/** Answers readiness: undefined when ready, else what is missing. */
export type ReadinessCheck = () => string[];

/** What /metrics serves: a Registry, or anything that renders like one (a cluster's aggregate). */
export type MetricsSource = Pick<Registry, 'metrics' | 'contentType'>;

export interface OpsServerOptions {
  metrics: MetricsSource;
  ready: ReadinessCheck;
  /** The process's own GET routes (the gateway's live view): answers and returns true, or returns false. */
  routes?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Bounds on HTTP clients; without them, Node's defaults (no cap, 300 s to send a request). */
  limits?: OpsServerLimits;
}

export interface OpsServerLimits {
  /** Sockets at once; beyond, Node closes new ones at accept. */
  maxConnections: number;
  /** From accept (or the end of the previous response) to a complete request; then 408 and closed. */
  requestTimeoutMs: number;
  /** A socket refused for maxConnections. */
  dropped?: () => void;
  /** A socket closed for requestTimeoutMs. */
  timedOut?: () => void;
}

function send(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

/**
 * /metrics (Prometheus), /healthz (the process is alive and serving), /readyz (200 only when every
 * dependency is up: a load balancer stops sending devices to a gateway that cannot store).
 */
export function createOpsServer(options: OpsServerOptions): Server {
  const limits = options.limits;
  const server = createServer(
    limits === undefined
      ? {}
      : {
          // Node's headersTimeout and requestTimeout hold also for a socket that sends nothing; they
          // are checked every connectionsCheckingInterval (30 s by default, far above the bound).
          headersTimeout: limits.requestTimeoutMs,
          requestTimeout: limits.requestTimeoutMs,
          connectionsCheckingInterval: Math.min(1_000, Math.ceil(limits.requestTimeoutMs / 4)),
        },
    (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return send(res, 405, '{"error":"method not allowed"}');
      if (path === '/healthz') return send(res, 200, '{"status":"ok"}');
      if (path === '/readyz') {
        const missing = options.ready();
        return send(
          res,
          missing.length === 0 ? 200 : 503,
          JSON.stringify({ ready: missing.length === 0, missing }),
        );
      }
      if (path === '/metrics') {
        options.metrics.metrics().then(
          (text) => send(res, 200, text, options.metrics.contentType),
          (err: Error) => send(res, 500, JSON.stringify({ error: err.message })),
        );
        return;
      }
      if (options.routes?.(req, res)) return;
      send(res, 404, '{"error":"not found"}');
    },
  );
  if (limits !== undefined) boundClients(server, limits);
  return server;
}

/**
 * At most `maxConnections` sockets, each counted when refused (`dropped`), and a socket whose request
 * did not come complete in time answered 408 and closed, counted (`timedOut`). The timeouts
 * themselves are the server's options (headersTimeout, requestTimeout), set where it is created.
 */
export function boundClients(
  server: Server,
  limits: Pick<OpsServerLimits, 'maxConnections' | 'dropped' | 'timedOut'>,
): void {
  server.maxConnections = limits.maxConnections;
  server.on('drop', () => limits.dropped?.());
  // With a listener Node leaves the answer to us: what it would do itself, plus the count.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    if (timedOut) limits.timedOut?.();
    if (socket.writable && timedOut)
      socket.write('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    else if (socket.writable && err.code?.startsWith('HPE_'))
      socket.write('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    socket.destroy();
  });
}
