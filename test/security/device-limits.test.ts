import type { NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  DEADLETTER_MAX_REJECTIONS,
  DEADLETTER_STREAM,
  type DeadLetter,
  PRESENCE_STREAM,
  type PresenceEvent,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { closedByBroker, connectDevice, connectOutcome } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { RawSession } from '../kit/raw-mqtt.js';
import { readStream, waitForStream } from '../kit/streams.js';

/**
 * What one registered device can make the gateway hold or do, each reproduced as it was found
 * (issue: "keep the promise with hostile devices"), and the bound that now stops it.
 */

let nats: NatsServer;
let nc: NatsConnection;
const gateways: Gateway[] = [];
const clients: MqttClient[] = [];

async function gatewayWith(overrides: Record<string, string>): Promise<Gateway> {
  const { gateway } = await startGateway(nats.url, overrides);
  gateways.push(gateway);
  return gateway;
}

const devices = new Map<string, ProvisionedDevice>();
/** Devices are registered before any gateway starts, so that every gateway's registry has them. */
const NAMES = [
  'long-id',
  'many-conns',
  'amplifier',
  'mixed',
  'bytes',
  'inventor',
  'inventor-2',
  'qos0-batch',
  'paused',
  'reconnector',
  'will-flood',
];
const device = async (name: string) => devices.get(name)!;

const limitCount = async (gw: Gateway, limit: string) =>
  (await gw.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

const of = async <T extends { deviceId: string }>(stream: string, id: string) =>
  (await readStream<T>(nc, stream)).filter((m) => m.data.deviceId === id);

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  for (const name of NAMES) devices.set(name, await provision(nc, name, 'acme'));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  for (const g of gateways) await g.close();
  await nc?.close();
  await nats?.dispose();
});

describe('client ids and connections (presence stopped for the whole fleet)', () => {
  it('refuses a client id over MAX_CLIENT_ID_BYTES with CONNACK 2, and one that bloats the CONNECT at its header', async () => {
    const gw = await gatewayWith({});
    const d = await device('long-id');
    const login = { username: d.id, password: d.secret };
    const at128 = `${d.id}:${'x'.repeat(128 - d.id.length - 1)}`;
    expect(await connectOutcome(gw.ports.mqtt, { ...login, clientId: at128 })).toBe('accepted');
    expect(await connectOutcome(gw.ports.mqtt, { ...login, clientId: `${at128}y` })).toBe(2);
    // As found: 50,000 characters. Closed before the CONNECT is even read (MAX_CONNECT_BYTES).
    const huge = mqtt.connect(`mqtt://127.0.0.1:${gw.ports.mqtt}`, {
      ...login,
      clientId: `${d.id}:${'x'.repeat(50_000)}`,
      reconnectPeriod: 0,
    });
    huge.on('error', () => {});
    await new Promise<void>((resolve) => huge.once('close', () => resolve()));
    expect(huge.connected).toBe(false);
    huge.end(true);
    expect(await limitCount(gw, 'MAX_CLIENT_ID_BYTES')).toBe(1);
    expect(await limitCount(gw, 'MAX_CONNECT_BYTES')).toBe(1);
    const presence = await of<PresenceEvent>(PRESENCE_STREAM, d.id);
    expect(presence.every((p) => Buffer.byteLength(p.data.clientId) <= 128)).toBe(true);
  });

  it('keeps at most MAX_CONNECTIONS_PER_DEVICE of one device open, closing the oldest', async () => {
    const gw = await gatewayWith({ MAX_CONNECTIONS_PER_DEVICE: '8' });
    const d = await device('many-conns');
    const opened: MqttClient[] = [];
    for (let i = 0; i < 25; i++) {
      const c = await connectDevice(gw.ports.mqtt, d, { clientId: `${d.id}:${i}` });
      c.on('error', () => {});
      opened.push(c);
    }
    clients.push(...opened);
    const stillOpen = () => opened.map((c, i) => (c.connected ? i : -1)).filter((i) => i >= 0);
    // The gateway closes the oldest as each new one arrives; wait for the last of those closes.
    await Promise.all(opened.slice(0, 17).map((c) => closedByBroker(c)));
    expect(stillOpen()).toEqual([17, 18, 19, 20, 21, 22, 23, 24]);
    expect(await limitCount(gw, 'MAX_CONNECTIONS_PER_DEVICE')).toBe(17);
    const lost = await waitForStream<PresenceEvent>(
      nc,
      PRESENCE_STREAM,
      (m) => m.filter((e) => e.data.deviceId === d.id && e.data.type === 'lost').length === 17,
    );
    expect(
      lost.filter((e) => e.data.deviceId === d.id && e.data.type === 'lost').map((e) => e.data.reason),
    ).toEqual(Array(17).fill('connection limit'));
    // The newest connection works.
    await opened[24]!.publishAsync(telemetryTopic(d.id), '{"metrics":{"a":1}}', { qos: 1 });
  });
});

describe('one message costs a bounded amount (amplification)', () => {
  it('dead-letters a batch over MAX_READINGS_PER_PUBLISH whole, one letter per message, never one per element', async () => {
    // The byte budget off, to show the bound of one message alone: as found, 20 in flight.
    const gw = await gatewayWith({ DEVICE_MAX_BYTES_PER_SEC: '0' });
    const d = await device('amplifier');
    const session = await RawSession.open(gw.ports.mqtt, {
      clientId: d.id,
      username: d.id,
      password: d.secret,
    });
    const ones = `[${Array(32_700).fill('1').join(',')}]`;
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => session.publish(telemetryTopic(d.id), ones, i + 1)),
    );
    await session.drop();
    const letters = await of<DeadLetter>(DEADLETTER_STREAM, d.id);
    expect(letters).toHaveLength(20);
    expect(letters.every((l) => l.data.reason === 'BATCH_TOO_LARGE')).toBe(true);
    expect(letters[0]!.data.detail).toBe('32700 readings, at most 1000 allowed in one publish');
    expect(await limitCount(gw, 'MAX_READINGS_PER_PUBLISH')).toBe(20);
  });

  it('lists a batch’s first rejected readings in its one letter, in no more room than its payload', async () => {
    const gw = await gatewayWith({});
    const d = await device('mixed');
    const client = await connectDevice(gw.ports.mqtt, d);
    clients.push(client);
    const batch = Array.from({ length: 1_000 }, (_, i) => (i === 500 ? { metrics: { ok: 1 } } : i));
    const payload = JSON.stringify(batch);
    await client.publishAsync(telemetryTopic(d.id), payload, { qos: 1 });
    expect(await of<CanonicalEvent>(TELEMETRY_STREAM, d.id)).toHaveLength(1);
    const [letter] = await of<DeadLetter>(DEADLETTER_STREAM, d.id);
    expect(letter!.data).toMatchObject({
      reason: 'SCHEMA_INVALID',
      readings: 1_000,
      rejected: 999,
      index: 0,
    });
    // 999 numbers of ~4 bytes each, ~80 bytes each listed: the list stops at the payload's 3.9 KB.
    const rejections = letter!.data.rejections!;
    expect(rejections.length).toBeGreaterThan(10);
    expect(rejections.length).toBeLessThanOrEqual(DEADLETTER_MAX_REJECTIONS);
    expect(rejections.map((r) => r.index)).toEqual(rejections.map((_, i) => i));
    expect(rejections.every((r) => r.reason === 'SCHEMA_INVALID')).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(rejections))).toBeLessThanOrEqual(payload.length);
    expect(Buffer.byteLength(JSON.stringify(letter!.data))).toBeLessThan(3 * payload.length);
  });

  it('holds a device to DEVICE_MAX_BYTES_PER_SEC: large payloads wait, a device far over it is cut off', async () => {
    const gw = await gatewayWith({ DEVICE_MAX_BYTES_PER_SEC: '20000', DEVICE_BYTES_BURST: '65536' });
    const d = await device('bytes');
    const session = await RawSession.open(gw.ports.mqtt, {
      clientId: d.id,
      username: d.id,
      password: d.secret,
    });
    const reading = (i: number) => JSON.stringify({ metrics: { a: i }, pad: 'x'.repeat(10_000) });
    // Six ~10 KB publishes fit the burst; the next ones wait ~0.5 s each for their bytes.
    const started = performance.now();
    for (let i = 1; i <= 8; i++) await session.publish(telemetryTopic(d.id), reading(i), i);
    expect(performance.now() - started).toBeGreaterThan(500);
    expect(await limitCount(gw, 'DEVICE_MAX_BYTES_PER_SEC')).toBeGreaterThan(0);
    // Not waiting for its PUBACKs, it runs a whole burst into debt: the connection is closed.
    for (let i = 100; i < 120; i++) session.send(telemetryTopic(d.id), reading(i), i);
    await session.closed;
    expect(session.socket.destroyed).toBe(true);
    expect(await of<CanonicalEvent>(TELEMETRY_STREAM, d.id)).not.toHaveLength(0);
  });
});

describe('a connection paused at MAX_IN_FLIGHT_PER_CLIENT', () => {
  it('is read again once its publishes are answered, also those that finished while it was paused', async () => {
    // Publishes of one read that wait for their bytes finish while reading is paused; aedes 1.2 lost
    // count of them, and the connection was never read again.
    const gw = await gatewayWith({
      MAX_IN_FLIGHT_PER_CLIENT: '10',
      DEVICE_MAX_BYTES_PER_SEC: '40000',
      DEVICE_BYTES_BURST: '40000',
      MAX_PAYLOAD_BYTES: '4096',
    });
    const d = await device('paused');
    const session = await RawSession.open(gw.ports.mqtt, {
      clientId: d.id,
      username: d.id,
      password: d.secret,
    });
    const payload = JSON.stringify({ metrics: { a: 1 }, pad: 'x'.repeat(1_000) });
    // ~38 pass at once, the rest wait up to ~0.5 s for their bytes: more than 10 in flight, paused.
    session.sendQos0(telemetryTopic(d.id), Array(60).fill(payload));
    await waitForStream<CanonicalEvent>(
      nc,
      TELEMETRY_STREAM,
      (m) => m.filter((e) => e.data.deviceId === d.id).length === 60,
    );
    // Still read afterwards: a QoS 1 publish sent once they are all stored gets its PUBACK.
    await session.publish(telemetryTopic(d.id), payload, 1, false, 10_000);
    await session.drop();
    expect(await limitCount(gw, 'MAX_IN_FLIGHT_PER_CLIENT')).toBeGreaterThan(0);
    expect(await limitCount(gw, 'DEVICE_MAX_BYTES_PER_SEC')).toBeGreaterThan(0);
    expect(await of<CanonicalEvent>(TELEMETRY_STREAM, d.id)).toHaveLength(61);
  });
});

describe('reconnect loops and wills', () => {
  it('accepts at most DEVICE_MAX_CONNECTS_PER_MIN connections of a device, and only its own CONNECTs spend them', async () => {
    const gw = await gatewayWith({ DEVICE_MAX_CONNECTS_PER_MIN: '5', AUTH_FAILURES_PER_MINUTE: '0' });
    const d = await device('reconnector');
    // Someone without the secret cannot use up the device's allowance.
    for (let i = 0; i < 6; i++)
      expect(await connectOutcome(gw.ports.mqtt, { clientId: d.id, username: d.id, password: 'guess' })).toBe(
        4,
      );
    const login = { clientId: d.id, username: d.id, password: d.secret };
    const outcomes = [];
    for (let i = 0; i < 7; i++) outcomes.push(await connectOutcome(gw.ports.mqtt, login));
    expect(outcomes).toEqual(['accepted', 'accepted', 'accepted', 'accepted', 'accepted', 3, 3]);
    expect(await limitCount(gw, 'DEVICE_MAX_CONNECTS_PER_MIN')).toBe(2);
    const presence = await of<PresenceEvent>(PRESENCE_STREAM, d.id);
    expect(presence.filter((p) => p.data.type === 'connected')).toHaveLength(5);
  });

  it('charges a will to the device’s publish budget and drops it when the budget is spent', async () => {
    const gw = await gatewayWith({ DEVICE_MAX_MSGS_PER_SEC: '1', DEVICE_MSGS_BURST: '3' });
    const d = await device('will-flood');
    // As found: a will on the telemetry topic, the connection dropped on purpose, over and over.
    for (let i = 0; i < 8; i++) {
      const c = await connectDevice(gw.ports.mqtt, d, {
        will: {
          topic: telemetryTopic(d.id),
          payload: Buffer.from(`{"metrics":{"w":${i}}}`),
          qos: 1,
          retain: false,
        },
      });
      c.on('error', () => {});
      c.stream.destroy();
      await new Promise<void>((resolve) => c.once('close', () => resolve()));
      c.end(true);
    }
    // Every will has been either stored or dropped once the two add up to all eight.
    let stored = await of<CanonicalEvent>(TELEMETRY_STREAM, d.id);
    for (let i = 0; stored.length + (await limitCount(gw, 'DEVICE_MAX_MSGS_PER_SEC')) < 8 && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 50));
      stored = await of<CanonicalEvent>(TELEMETRY_STREAM, d.id);
    }
    // Its burst of 3, and at most one more for each second the loop took.
    expect(stored.length).toBeGreaterThanOrEqual(3);
    expect(stored.length).toBeLessThan(8);
    expect(await limitCount(gw, 'DEVICE_MAX_MSGS_PER_SEC')).toBe(8 - stored.length);
  });
});

describe('metric names (no cardinality limit)', () => {
  it('stops a device at DEVICE_MAX_METRICS distinct names; the rest are dead-lettered METRIC_LIMIT', async () => {
    const gw = await gatewayWith({ DEVICE_MAX_METRICS: '50', DEVICE_MAX_BYTES_PER_SEC: '0' });
    const d = await device('inventor');
    const client = await connectDevice(gw.ports.mqtt, d);
    clients.push(client);
    let n = 0;
    // As found: a new name in every reading, far within the publish rate (100 readings a batch).
    for (let batch = 0; batch < 5; batch++) {
      const readings = Array.from({ length: 100 }, () => ({ metrics: { [`m${n++}`]: n } }));
      await client.publishAsync(telemetryTopic(d.id), JSON.stringify(readings), { qos: 1 });
    }
    // Names it already has still pass.
    await client.publishAsync(telemetryTopic(d.id), '{"metrics":{"m0":1,"m49":2}}', { qos: 1 });
    const events = await of<CanonicalEvent>(TELEMETRY_STREAM, d.id);
    expect(events).toHaveLength(51);
    const letters = await of<DeadLetter>(DEADLETTER_STREAM, d.id);
    expect(letters.map((l) => l.data.rejected)).toEqual([50, 100, 100, 100, 100]);
    expect(letters.every((l) => l.data.reason === 'METRIC_LIMIT')).toBe(true);
    expect(await limitCount(gw, 'DEVICE_MAX_METRICS')).toBe(450);
    // Another device of the tenant has its own allowance.
    const other = await device('inventor-2');
    const c2 = await connectDevice(gw.ports.mqtt, other);
    clients.push(c2);
    await c2.publishAsync(telemetryTopic(other.id), '{"metrics":{"m400":1}}', { qos: 1 });
    expect(await of<CanonicalEvent>(TELEMETRY_STREAM, other.id)).toHaveLength(1);
  });
});

describe('QoS 0 batches', () => {
  it('stores a QoS 0 batch larger than QOS0_MAX_IN_FLIGHT on an idle gateway', async () => {
    const gw = await gatewayWith({ QOS0_MAX_IN_FLIGHT: '10' });
    const d = await device('qos0-batch');
    const client = await connectDevice(gw.ports.mqtt, d);
    clients.push(client);
    const batch = Array.from({ length: 30 }, (_, i) => ({ seq: i, metrics: { a: i } }));
    await client.publishAsync(telemetryTopic(d.id), JSON.stringify(batch), { qos: 0 });
    const stored = await waitForStream<CanonicalEvent>(
      nc,
      TELEMETRY_STREAM,
      (m) => m.filter((e) => e.data.deviceId === d.id).length === 30,
    );
    expect(stored.filter((e) => e.data.deviceId === d.id).map((e) => e.data.seq)).toEqual(
      Array.from({ length: 30 }, (_, i) => i),
    );
    expect(await limitCount(gw, 'QOS0_MAX_IN_FLIGHT')).toBe(0);
  });
});
