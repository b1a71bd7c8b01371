import { connect, type Socket } from 'node:net';
import mqtt from 'mqtt';
import { generate } from 'mqtt-packet';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Gateway } from '../../gateway/gateway.js';
import { startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { connectPacket } from '../kit/raw-mqtt.js';

/**
 * PINGREQ, SUBSCRIBE and UNSUBSCRIBE cost the gateway work and are outside the publish rate limit:
 * one connection looping them at wire speed took 1.2 cores and put other devices' publish→PUBACK
 * p50 from 2 ms to 26–64 ms (bench/control-flood.ts). Past MAX_CONTROL_PACKETS_PER_SEC, with a
 * CONTROL_PACKETS_BURST to spend, the connection is closed.
 */

const RATE = 10;
const BURST = 100;

let nats: NatsServer;
let gateway: Gateway;
const sockets: Socket[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const limitCount = async (limit: string) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

/** Connects raw, then writes `packet` `count` times in one go; how many answers came before the close. */
async function flood(
  clientId: string,
  packet: Buffer,
  count: number,
): Promise<{ closed: boolean; bytes: number }> {
  const socket = connect({ port: gateway.ports.mqtt, host: '127.0.0.1' });
  sockets.push(socket);
  socket.on('error', () => {});
  let bytes = 0;
  let closed = false;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  socket.on('close', () => (closed = true));
  await new Promise((r) => socket.once('connect', r));
  socket.write(connectPacket({ clientId, username: clientId }));
  await sleep(200);
  const connack = bytes;
  socket.write(Buffer.concat(Array.from({ length: count }, () => packet)));
  await sleep(1_000);
  return { closed, bytes: bytes - connack };
}

beforeAll(async () => {
  nats = await startNatsServer();
  ({ gateway } = await startGateway(nats.url, {
    AUTH_MODE: 'open',
    LIVE_VIEW: 'false',
    MAX_CONTROL_PACKETS_PER_SEC: String(RATE),
    CONTROL_PACKETS_BURST: String(BURST),
  }));
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await gateway?.close();
  await nats?.dispose();
});

it('closes a connection looping PINGREQ, after its burst', async () => {
  const { closed, bytes } = await flood('ctl-ping', generate({ cmd: 'pingreq' }), 5_000);
  expect(closed).toBe(true);
  // PINGRESP is 2 bytes: about a burst of them, not 5,000.
  expect(bytes / 2).toBeLessThanOrEqual(BURST + RATE);
  expect(await limitCount('MAX_CONTROL_PACKETS_PER_SEC')).toBe(1);
});

it('closes a connection looping SUBSCRIBE and UNSUBSCRIBE', async () => {
  const filter = 'devices/ctl-sub/commands/#';
  const pair = Buffer.concat([
    generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] }),
    generate({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: [filter] }),
  ]);
  const { closed } = await flood('ctl-sub', pair, 2_000);
  expect(closed).toBe(true);
  expect(await limitCount('MAX_CONTROL_PACKETS_PER_SEC')).toBe(2);
});

it('leaves a client alone that subscribes its allowed maximum one packet at a time, and pings', async () => {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.mqtt}`, {
    clientId: 'ctl-fine',
    username: 'ctl-fine',
    keepalive: 5,
    reconnectPeriod: 0,
  });
  for (let i = 0; i < 99; i++) await client.subscribeAsync(`devices/ctl-fine/commands/c${i}`, { qos: 1 });
  await client.subscribeAsync('devices/ctl-fine/commands/#', { qos: 1 });
  await sleep(1_000);
  expect(client.connected).toBe(true);
  expect(await limitCount('MAX_CONTROL_PACKETS_PER_SEC')).toBe(2);
  await client.endAsync();
});
