import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

/** Answers readiness: undefined when ready, else what is missing. */
export type ReadinessCheck = () => string[];

export interface OpsServerOptions {
  metrics: Registry;
  ready: ReadinessCheck;
  /** The process's own GET routes (the gateway's live view): answers and returns true, or returns false. */
  routes?: (req: IncomingMessage, res: ServerResponse) => boolean;
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
  return createServer((req, res) => {
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
  });
}
