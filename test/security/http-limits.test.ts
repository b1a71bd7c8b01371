import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Gateway } from '../../gateway/gateway.js';
import { startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * The gateway's HTTP port (metrics, health, live view) against clients that connect and say nothing,
 * trickle their headers, or open more sockets than it serves: each is bounded and counted.
 */

const TIMEOUT_MS = 500;
/** The least the config allows with the live view on: its 32 streams and 8 more. */
const MAX = 40;
/** Node checks request timeouts on an interval; how late a close may come and still be on time. */
const SLACK_MS = 1_500;

let nats: NatsServer;
let gateway: Gateway;
const sockets: Socket[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const limitCount = async (limit: string) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

function open(): { socket: Socket; closedAfter: Promise<number>; connected: Promise<unknown> } {
  const socket = connect({ port: gateway.ports.http!, host: '127.0.0.1' });
  sockets.push(socket);
  socket.on('error', () => {});
  socket.on('data', () => {});
  const started = Date.now();
  return {
    socket,
    connected: new Promise((r) => socket.once('connect', r)),
    closedAfter: new Promise((r) => socket.once('close', () => r(Date.now() - started))),
  };
}

beforeAll(async () => {
  nats = await startNatsServer();
  ({ gateway } = await startGateway(nats.url, {
    AUTH_MODE: 'open',
    HTTP_MAX_CONNECTIONS: String(MAX),
    HTTP_REQUEST_TIMEOUT_MS: String(TIMEOUT_MS),
  }));
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await gateway?.close();
  await nats?.dispose();
});

it('closes sockets that send nothing, or trickle their headers, after HTTP_REQUEST_TIMEOUT_MS', async () => {
  const idle = open();
  const slow = open();
  await slow.connected;
  slow.socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
  const drip = setInterval(() => slow.socket.writable && slow.socket.write('X-Slow: y\r\n'), 100);
  const closed = await Promise.race([
    Promise.all([idle.closedAfter, slow.closedAfter]),
    sleep(TIMEOUT_MS + SLACK_MS).then(() => 'still open' as const),
  ]);
  clearInterval(drip);
  expect(closed).not.toBe('still open');
  expect(await limitCount('HTTP_REQUEST_TIMEOUT_MS')).toBe(2);
  // A request sent at once is served as before, SSE included (a stream is not a slow request).
  expect((await fetch(`http://127.0.0.1:${gateway.ports.http}/healthz`)).status).toBe(200);
  const abort = new AbortController();
  const events = await fetch(`http://127.0.0.1:${gateway.ports.http}/live/events`, { signal: abort.signal });
  expect(events.status).toBe(200);
  await sleep(TIMEOUT_MS + SLACK_MS);
  const reader = events.body!.getReader();
  expect((await reader.read()).done).toBe(false);
  abort.abort();
});

it('serves at most HTTP_MAX_CONNECTIONS sockets, refusing the others at accept', async () => {
  await sleep(200); // the sockets of the previous test are gone
  const held = Array.from({ length: MAX }, open);
  await Promise.all(held.map((h) => h.connected));
  await sleep(100);
  const extra = open();
  const refused = await Promise.race([extra.closedAfter, sleep(TIMEOUT_MS / 2).then(() => -1)]);
  expect(refused).toBeGreaterThanOrEqual(0);
  expect(await limitCount('HTTP_MAX_CONNECTIONS')).toBeGreaterThanOrEqual(1);
  for (const h of held) h.socket.destroy();
  await sleep(100);
  expect((await fetch(`http://127.0.0.1:${gateway.ports.http}/healthz`)).status).toBe(200);
});
