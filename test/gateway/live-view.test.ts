import type { Server } from 'node:http';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../common/config.js';
import { createOpsServer } from '../../common/http-server.js';
import { closeServer, listen } from '../../common/listen.js';
import { createLogger } from '../../common/logger.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import type { LiveMessage } from '../../gateway/live/live-feed.js';
import { createLiveView, type LiveView } from '../../gateway/live/live-view.js';

/** The live view's routes on a real ops server (port 0), without NATS: auth, assets, the SSE stream. */
const TOKEN = 'operator-token-0123456789abcdef';

let server: Server | undefined;
let view: LiveView | undefined;

afterEach(async () => {
  await view?.close();
  // undici opens a spare connection after an aborted stream; it would hold close() for its 4 s keep-alive.
  server?.closeAllConnections();
  if (server) await closeServer(server);
  server = view = undefined;
});

async function start(authMode: 'registry' | 'open', operatorToken: string | undefined): Promise<string> {
  view = createLiveView({
    authMode,
    operatorToken,
    gatewayId: 'gw-live',
    natsConnected: () => false,
    log: createLogger('test', 'silent'),
  });
  server = createOpsServer({ metrics: new Registry(), ready: () => [], routes: view.handle });
  const port = await listen(server, 0, '127.0.0.1', 'HTTP_PORT');
  return `http://127.0.0.1:${port}`;
}

/** The first SSE event of a stream, parsed; the request is then aborted. */
async function firstEvent(
  url: string,
  headers: Record<string, string> = {},
): Promise<LiveMessage & { status: unknown }> {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before an event: ${text}`);
      text += decoder.decode(value, { stream: true });
      const match = /^data: (.*)\n\n/m.exec(text);
      if (match) return JSON.parse(match[1]!);
    }
  } finally {
    abort.abort();
  }
}

describe('live view: AUTH_MODE=registry with an OPERATOR_TOKEN', () => {
  it('refuses the page and the data without the token, 401 with a hint', async () => {
    const base = await start('registry', TOKEN);
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(401);
    expect(page.headers.get('www-authenticate')).toBe('Bearer realm="live view"');
    expect(await page.text()).toContain('?token=');
    for (const path of ['/live/events', '/live/snapshot', `/live/events?token=${TOKEN}x`]) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(401);
      expect(await res.json()).toMatchObject({ code: 'OPERATOR_TOKEN_REQUIRED' });
    }
    const wrongBearer = await fetch(`${base}/live/snapshot`, { headers: { authorization: 'Bearer nope' } });
    expect(wrongBearer.status).toBe(401);
  });

  it('serves the page with the token as a Bearer header or as ?token=', async () => {
    const base = await start('registry', TOKEN);
    const byHeader = await fetch(`${base}/`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(byHeader.status).toBe(200);
    expect(byHeader.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(byHeader.headers.get('referrer-policy')).toBe('no-referrer');
    expect(byHeader.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await byHeader.text()).toContain('assets/app.js');
    const byQuery = await fetch(`${base}/?token=${encodeURIComponent(TOKEN)}`);
    expect(byQuery.status).toBe(200);
    const snapshot = await fetch(`${base}/live/snapshot`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(snapshot.status).toBe(200);
    expect(await snapshot.json()).toMatchObject({
      full: true,
      devices: { online: null, reporting: 0 },
      status: { gateway: 'gw-live', nats: false },
    });
  });

  it('takes the Bearer scheme in any case, as RFC 9110 §11.1 says schemes are', async () => {
    const base = await start('registry', TOKEN);
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const res = await fetch(`${base}/live/snapshot`, { headers: { authorization: `${scheme} ${TOKEN}` } });
      expect(res.status, scheme).toBe(200);
    }
    // Whitespace between scheme and token is 1*SP in the grammar; a tab or no token is not a credential.
    for (const header of [`Bearer\t${TOKEN}`, 'Bearer', 'Bearer ', `Basic ${TOKEN}`, `Bearer${TOKEN}`]) {
      const res = await fetch(`${base}/live/snapshot`, { headers: { authorization: header } });
      expect(res.status, JSON.stringify(header)).toBe(401);
    }
  });

  it('streams a full message first over SSE, the token in the query as EventSource sends it', async () => {
    const base = await start('registry', TOKEN);
    const first = await firstEvent(`${base}/live/events?token=${encodeURIComponent(TOKEN)}`);
    expect(first).toMatchObject({ full: true, totals: { events: 0 }, status: { gateway: 'gw-live' } });
    const byHeader = await firstEvent(`${base}/live/events`, { authorization: `Bearer ${TOKEN}` });
    expect(byHeader.full).toBe(true);
  });

  it('serves its script, styles and uPlot without the token (they hold no data)', async () => {
    const base = await start('registry', TOKEN);
    for (const [path, type] of [
      ['/assets/app.js', 'text/javascript'],
      ['/assets/style.css', 'text/css'],
      ['/assets/uplot.min.js', 'text/javascript'],
      ['/assets/uplot.min.css', 'text/css'],
    ] as const) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toContain(type);
      expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(500);
    }
    expect((await fetch(`${base}/assets/nope.js`)).status).toBe(404);
    expect((await fetch(`${base}/elsewhere`)).status).toBe(404);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });
});

describe('live view: other modes', () => {
  it('answers 403 in AUTH_MODE=registry when no OPERATOR_TOKEN is configured, saying what to set', async () => {
    const base = await start('registry', undefined);
    const page = await fetch(`${base}/?token=anything`);
    expect(page.status).toBe(403);
    expect(await page.text()).toContain('OPERATOR_TOKEN');
    const events = await fetch(`${base}/live/events`, { headers: { authorization: 'Bearer anything' } });
    expect(events.status).toBe(403);
    expect(await events.json()).toMatchObject({ code: 'OPERATOR_TOKEN_UNSET' });
  });

  it('is open in AUTH_MODE=open without a token', async () => {
    const base = await start('open', undefined);
    expect((await fetch(`${base}/`)).status).toBe(200);
    expect((await firstEvent(`${base}/live/events`)).full).toBe(true);
  });

  it('still asks for a token that is configured in AUTH_MODE=open', async () => {
    const base = await start('open', TOKEN);
    expect((await fetch(`${base}/`)).status).toBe(401);
    expect((await fetch(`${base}/?token=${TOKEN}`)).status).toBe(200);
  });
});

describe('live view configuration', () => {
  const base = { NATS_URL: 'nats://127.0.0.1:4222' };

  it('is on by default, without a token', () => {
    const config = loadConfig(GatewayConfigSchema, base);
    expect(config.LIVE_VIEW).toBe(true);
    expect(config.OPERATOR_TOKEN).toBeUndefined();
    expect(loadConfig(GatewayConfigSchema, { ...base, LIVE_VIEW: 'false' }).LIVE_VIEW).toBe(false);
  });

  it('refuses a short OPERATOR_TOKEN without echoing it', () => {
    const short = 'tiny-secret';
    let error: unknown;
    try {
      loadConfig(GatewayConfigSchema, { ...base, OPERATOR_TOKEN: short });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain('OPERATOR_TOKEN: at least 16 characters');
    expect((error as ConfigError).message).not.toContain(short);
  });
});
