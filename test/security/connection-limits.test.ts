import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Gateway } from '../../gateway/gateway.js';
import { startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { connectPacket } from '../kit/raw-mqtt.js';
import { makeTestCertificate, type TestCertificate } from '../kit/tls.js';

/**
 * What a connection may hold before it is an MQTT client: every listener (TCP, WebSocket, TLS) gives
 * a socket CONNECT_TIMEOUT_MS from accept to its MQTT CONNECT, TLS handshake and WebSocket upgrade
 * included, however slowly it trickles bytes; each listener holds at most MAX_CONNECTIONS sockets.
 */

const CONNECT_TIMEOUT_MS = 1_000;
/** Timers, accept and close on a shared machine: how late a close may come and still count as on time. */
const SLACK_MS = 1_500;

let nats: NatsServer;
let certificate: TestCertificate | undefined;
let cert: Buffer;
let gateway: Gateway;
const gateways: Gateway[] = [];
const sockets: Socket[] = [];
const clients: MqttClient[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const limitCount = async (gw: Gateway, limit: string) =>
  (await gw.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

type Listener = 'mqtt' | 'ws' | 'mqtts';
const portOf = (gw: Gateway, listener: Listener) => gw.ports[listener]!;

/**
 * A TCP socket to a listener; resolves how many ms after asking to connect the gateway closed it.
 * Timed from the ask, not from the client's 'connect' event: gateway and test share one event loop,
 * and under load that event runs well after the gateway accepted the socket and started its timer.
 */
function openSocket(port: number): { socket: Socket; closedAfter: Promise<number> } {
  const opened = Date.now();
  const socket = netConnect({ port, host: '127.0.0.1' });
  sockets.push(socket);
  socket.on('error', () => {});
  socket.on('data', () => {});
  const closedAfter = new Promise<number>((resolve) =>
    socket.once('close', () => resolve(Date.now() - opened)),
  );
  return { socket, closedAfter };
}

beforeAll(async () => {
  certificate = await makeTestCertificate();
  cert = certificate.cert;
  nats = await startNatsServer();
  ({ gateway } = await startGateway(nats.url, {
    AUTH_MODE: 'open',
    LIVE_VIEW: 'false',
    MQTTS_PORT: '0',
    TLS_CERT_FILE: certificate!.certFile,
    TLS_KEY_FILE: certificate!.keyFile,
    CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
  }));
  gateways.push(gateway);
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await Promise.all(gateways.map((g) => g.close()));
  await nats?.dispose();
  await certificate?.dispose();
});

describe('CONNECT_TIMEOUT_MS', () => {
  it.each(['mqtt', 'ws', 'mqtts'] as const)('closes %s sockets that send nothing', async (listener) => {
    const before = await limitCount(gateway, 'CONNECT_TIMEOUT_MS');
    const opened = Array.from({ length: 10 }, () => openSocket(portOf(gateway, listener)));
    const closed = await Promise.race([
      Promise.all(opened.map((o) => o.closedAfter)),
      sleep(CONNECT_TIMEOUT_MS + SLACK_MS).then(() => 'still open' as const),
    ]);
    expect(closed).not.toBe('still open');
    for (const ms of closed as number[]) expect(ms).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 50);
    expect((await limitCount(gateway, 'CONNECT_TIMEOUT_MS')) - before).toBe(10);
  });

  it('does not let a TLS handshake trickled a byte at a time extend it', async () => {
    const { socket, closedAfter } = openSocket(portOf(gateway, 'mqtts'));
    // A TLS handshake record header announcing 512 bytes, then its body one byte every 100 ms.
    socket.once('connect', () => socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])));
    const drip = setInterval(() => socket.writable && socket.write(Buffer.from([0x01])), 100);
    const ms = await Promise.race([closedAfter, sleep(CONNECT_TIMEOUT_MS + SLACK_MS).then(() => -1)]);
    clearInterval(drip);
    expect(ms).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 50);
  });

  it('does not let an HTTP upgrade request trickled a header at a time extend it', async () => {
    const { socket, closedAfter } = openSocket(portOf(gateway, 'ws'));
    socket.once('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n'));
    const drip = setInterval(() => socket.writable && socket.write('X-Slow: y\r\n'), 100);
    const ms = await Promise.race([closedAfter, sleep(CONNECT_TIMEOUT_MS + SLACK_MS).then(() => -1)]);
    clearInterval(drip);
    expect(ms).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 50);
  });

  it('counts the TLS handshake and the WebSocket upgrade in, and closes clients that then send no CONNECT', async () => {
    const started = Date.now();
    const tls = tlsConnect({ port: portOf(gateway, 'mqtts'), host: '127.0.0.1', ca: cert });
    tls.on('error', () => {});
    const ws = new WebSocket(`ws://127.0.0.1:${portOf(gateway, 'ws')}`, 'mqtt');
    ws.on('error', () => {});
    const tlsClosed = new Promise<number>((r) => tls.once('close', () => r(Date.now() - started)));
    const wsClosed = new Promise<number>((r) => ws.once('close', () => r(Date.now() - started)));
    await new Promise((r) => tls.once('secureConnect', r));
    await new Promise((r) => ws.once('open', r));
    const closed = await Promise.race([
      Promise.all([tlsClosed, wsClosed]),
      sleep(CONNECT_TIMEOUT_MS + SLACK_MS).then(() => 'still open' as const),
    ]);
    expect(closed).not.toBe('still open');
    for (const ms of closed as number[]) expect(ms).toBeLessThan(CONNECT_TIMEOUT_MS + SLACK_MS);
  });

  it('leaves a CONNECT sent in time alone, on every listener', async () => {
    for (const [url, id] of [
      [`mqtt://127.0.0.1:${portOf(gateway, 'mqtt')}`, 'in-time-tcp'],
      [`ws://127.0.0.1:${portOf(gateway, 'ws')}`, 'in-time-ws'],
      [`mqtts://127.0.0.1:${portOf(gateway, 'mqtts')}`, 'in-time-tls'],
    ] as const) {
      clients.push(
        await mqtt.connectAsync(url, {
          clientId: id,
          username: id,
          reconnectPeriod: 0,
          ca: cert,
          keepalive: 60,
        }),
      );
    }
    // A raw CONNECT sent just before the deadline is in time too.
    const { socket, closedAfter } = openSocket(portOf(gateway, 'mqtt'));
    await new Promise((r) => socket.once('connect', r));
    await sleep(CONNECT_TIMEOUT_MS - 300);
    socket.write(connectPacket({ clientId: 'just-in-time', username: 'just-in-time' }));
    const outcome = await Promise.race([closedAfter.then(() => 'closed'), sleep(2 * CONNECT_TIMEOUT_MS)]);
    expect(outcome).toBeUndefined();
    await sleep(CONNECT_TIMEOUT_MS);
    expect(clients.every((c) => c.connected)).toBe(true);
  });
});

describe('MAX_CONNECTIONS', () => {
  it.each(['mqtt', 'ws', 'mqtts'] as const)(
    'refuses %s sockets beyond it at once, counts them, and accepts again once below',
    async (listener) => {
      const { gateway: small } = await startGateway(nats.url, {
        AUTH_MODE: 'open',
        LIVE_VIEW: 'false',
        MQTTS_PORT: '0',
        TLS_CERT_FILE: certificate!.certFile,
        TLS_KEY_FILE: certificate!.keyFile,
        MAX_CONNECTIONS: '5',
        CONNECT_TIMEOUT_MS: '60000',
      });
      gateways.push(small);
      const port = portOf(small, listener);
      const held = Array.from({ length: 5 }, () => openSocket(port));
      await Promise.all(held.map((h) => new Promise((r) => h.socket.once('connect', r))));
      await sleep(200); // accepted by the gateway, not only by the kernel
      const extra = openSocket(port);
      const refused = await Promise.race([extra.closedAfter, sleep(2_000).then(() => -1)]);
      expect(refused).toBeGreaterThanOrEqual(0);
      expect(await limitCount(small, 'MAX_CONNECTIONS')).toBe(1);
      expect(held.every((h) => !h.socket.destroyed)).toBe(true);
      held[0]!.socket.destroy();
      await sleep(200);
      const again = openSocket(port);
      const outcome = await Promise.race([again.closedAfter, sleep(500).then(() => 'open')]);
      expect(outcome).toBe('open');
    },
  );
});
