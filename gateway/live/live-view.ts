import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { createLiveAuth } from './live-auth.js';
import { LiveFeed, type LiveFeedLimits } from './live-feed.js';
import { LiveHub } from './live-hub.js';
import { type LiveSource, startLiveSource } from './live-source.js';

/**
 * The live view on the gateway's HTTP port: `/` (the page), `/assets/*` (its script, styles and
 * uPlot, which hold no data and need no token), `/live/events` (Server-Sent Events) and
 * `/live/snapshot` (the same data once, as JSON). The page and both data routes go through
 * live-auth.ts.
 */
export const LIVE_PUSH_INTERVAL_MS = 500;
/** Each client costs a socket and a cursor; a handful of operators' screens is the use. */
export const LIVE_MAX_CLIENTS = 32;
/** A full message is ~100 KiB at 500 devices: beyond about two unsent, a client is skipped. */
export const LIVE_MAX_BUFFERED_BYTES = 256 * 1024;
export const LIVE_STALL_TIMEOUT_MS = 30_000;
/** Tells EventSource how soon to reconnect after the stream ends. */
const SSE_RETRY_MS = 2_000;

export interface LiveViewOptions {
  authMode: 'registry' | 'open';
  operatorToken: string | undefined;
  gatewayId: string;
  natsConnected: () => boolean;
  log: Logger;
  clock?: () => number;
  limits?: Partial<LiveFeedLimits>;
  pushIntervalMs?: number;
}

export interface LiveView {
  /** Route hook for the ops server: answers and returns true for the live view's paths. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** Starts feeding from NATS, once the gateway is connected. */
  connect(nc: NatsConnection): void;
  /** Ends every client's stream and stops the feed. */
  close(): Promise<void>;
}

interface Asset {
  type: string;
  body: Buffer;
}

/**
 * Files under static/ beside this module; compiled to dist/, the module finds them in the source tree
 * beside dist/ instead (tsc copies no assets).
 */
function staticFile(name: string): Buffer {
  const candidates = [
    new URL(`./static/${name}`, import.meta.url),
    new URL(`../../../gateway/live/static/${name}`, import.meta.url),
  ];
  for (const url of candidates) {
    try {
      return readFileSync(url);
    } catch {}
  }
  throw new Error(`live view: ${name} not found in ${candidates.map((u) => fileURLToPath(u)).join(' or ')}`);
}

function loadAssets(log: Logger): Map<string, Asset> {
  const require = createRequire(import.meta.url);
  const files: [string, string, () => Buffer][] = [
    ['/', 'text/html; charset=utf-8', () => staticFile('index.html')],
    ['/assets/app.js', 'text/javascript; charset=utf-8', () => staticFile('app.js')],
    ['/assets/style.css', 'text/css; charset=utf-8', () => staticFile('style.css')],
    [
      '/assets/uplot.min.js',
      'text/javascript; charset=utf-8',
      () => readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js')),
    ],
    [
      '/assets/uplot.min.css',
      'text/css; charset=utf-8',
      () => readFileSync(require.resolve('uplot/dist/uPlot.min.css')),
    ],
  ];
  const assets = new Map<string, Asset>();
  for (const [path, type, read] of files) {
    try {
      assets.set(path, { type, body: read() });
    } catch (err) {
      log.error({ err, path }, 'live view: a file of the page is missing; that path answers 500');
    }
  }
  return assets;
}

const PAGE_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  // The token may be in the page's URL: never send it on as a Referer.
  'referrer-policy': 'no-referrer',
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
};

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

export function createLiveView(options: LiveViewOptions): LiveView {
  const { log } = options;
  const clock = options.clock ?? Date.now;
  const feed = new LiveFeed({ clock, ...(options.limits ? { limits: options.limits } : {}) });
  const hub = new LiveHub({
    feed,
    maxClients: LIVE_MAX_CLIENTS,
    maxBufferedBytes: LIVE_MAX_BUFFERED_BYTES,
    stallTimeoutMs: LIVE_STALL_TIMEOUT_MS,
    status: () => ({ gateway: options.gatewayId, nats: options.natsConnected() }),
    clock,
  });
  const authorize = createLiveAuth(options);
  const assets = loadAssets(log);
  if (options.authMode === 'registry' && options.operatorToken === undefined)
    log.info('live view: AUTH_MODE=registry and no OPERATOR_TOKEN, so / answers 403 until one is set');

  const timer = setInterval(() => {
    feed.tick();
    hub.push();
  }, options.pushIntervalMs ?? LIVE_PUSH_INTERVAL_MS);
  timer.unref();
  let source: LiveSource | undefined;

  const denied = (req: IncomingMessage, res: ServerResponse, url: URL, asText: boolean): boolean => {
    const auth = authorize(req.headers, url);
    if (auth.ok) return false;
    const headers: Record<string, string> =
      auth.status === 401 ? { 'www-authenticate': 'Bearer realm="live view"' } : {};
    if (asText) {
      res.writeHead(auth.status, {
        'content-type': 'text/plain; charset=utf-8',
        'cache-control': 'no-store',
        ...headers,
      });
      res.end(`${auth.message}\n`);
    } else sendJson(res, auth.status, { error: auth.message, code: auth.code }, headers);
    return true;
  };

  const events = (req: IncomingMessage, res: ServerResponse) => {
    if (hub.size >= LIVE_MAX_CLIENTS)
      return sendJson(res, 503, {
        error: `the live view serves at most ${LIVE_MAX_CLIENTS} clients at once`,
      });
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      // The socket goes with the stream: a kept-alive idle one would hold the server's close() open.
      connection: 'close',
      // Reverse proxies (nginx) would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
    if (req.method === 'HEAD') return res.end();
    res.write(`retry: ${SSE_RETRY_MS}\n\n`);
    hub.add(res);
    res.on('close', () => hub.remove(res));
  };

  return {
    handle(req, res) {
      const url = new URL(req.url ?? '/', 'http://live');
      const path = url.pathname === '/index.html' ? '/' : url.pathname;
      if (path === '/live/events') {
        if (!denied(req, res, url, false)) events(req, res);
        return true;
      }
      if (path === '/live/snapshot') {
        if (!denied(req, res, url, false))
          sendJson(res, 200, {
            ...feed.delta()?.message,
            status: { gateway: options.gatewayId, nats: options.natsConnected() },
          });
        return true;
      }
      if (path !== '/' && !path.startsWith('/assets/')) return false;
      if (path === '/' && denied(req, res, url, true)) return true;
      const asset = assets.get(path);
      if (asset === undefined) {
        if (path.startsWith('/assets/')) return false;
        sendJson(res, 500, { error: 'the live view page is missing from this installation' });
        return true;
      }
      res.writeHead(200, {
        'content-type': asset.type,
        'content-length': String(asset.body.length),
        ...(path === '/'
          ? PAGE_HEADERS
          : { 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' }),
      });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return true;
    },
    connect(nc) {
      source ??= startLiveSource(nc, feed, log);
    },
    async close() {
      clearInterval(timer);
      hub.close();
      await source?.close();
    },
  };
}
