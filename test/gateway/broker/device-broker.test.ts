import { createServer, type Server } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../common/config.js';
import { DeviceBroker } from '../../../gateway/broker/device-broker.js';
import { GatewayConfigSchema } from '../../../gateway/config.js';
import type { IncomingPublish, TelemetryHandler } from '../../../gateway/ingest/telemetry-handler.js';
import type { PresencePublisher } from '../../../gateway/presence.js';
import { VerifiedSecrets } from '../../../gateway/registry/secrets.js';
import { closedByBroker } from '../../kit/mqtt.js';
import { limitCount, log, metrics, presenceRecorder } from './fixtures.js';

/**
 * The wiring: a DeviceBroker in open mode over a real socket, with a real mqtt.js client, its
 * telemetry handler and presence recorded instead of stored.
 */
describe('DeviceBroker', () => {
  const m = metrics();
  const presence = presenceRecorder();
  const stored: IncomingPublish[] = [];
  const telemetry = {
    handle: (_identity: unknown, msg: IncomingPublish, _wanted: unknown, done: () => void) => {
      stored.push(msg);
      done();
    },
    rejectMessage: (_i: unknown, _m: unknown, _r: unknown, _w: unknown, done: () => void) => done(),
  };
  let broker: DeviceBroker;
  let server: Server;
  let port: number;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    const config = loadConfig(GatewayConfigSchema, {
      NATS_URL: 'nats://127.0.0.1:1',
      AUTH_MODE: 'open',
      MAX_PACKET_BYTES: '2048',
      MAX_PAYLOAD_BYTES: '1024',
      LOG_LEVEL: 'silent',
    });
    broker = await DeviceBroker.create({
      config,
      registry: undefined,
      verified: new VerifiedSecrets(),
      telemetry: telemetry as unknown as TelemetryHandler,
      presence: presence as unknown as PresencePublisher,
      metrics: m,
      log,
    });
    server = createServer((socket) => broker.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    for (const c of clients) c.end(true);
    await broker?.close();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  const connect = async (clientId: string, username: string) => {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId,
      username,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    });
    clients.push(client);
    return client;
  };

  it('authenticates, tracks presence and hands telemetry on, PUBACK once stored', async () => {
    const client = await connect('dev-1', 'dev-1');
    await expect.poll(() => broker.isOnline('dev-1')).toBe(true);
    await client.publishAsync('devices/dev-1/telemetry', '{"metrics":[]}', { qos: 1 });
    expect(stored.map((s) => s.topic)).toEqual(['devices/dev-1/telemetry']);
    expect(broker.connectedClients).toBe(1);
    await client.endAsync();
    await expect.poll(() => broker.isOnline('dev-1')).toBe(false);
    expect(presence.events.map((e) => [e.deviceId, e.type])).toEqual([
      ['dev-1', 'connected'],
      ['dev-1', 'disconnected'],
    ]);
  });

  it('closes a connection that publishes outside its device, and says why', async () => {
    const client = await connect('dev-2', 'dev-2');
    const closed = closedByBroker(client);
    client.publish('devices/dev-3/telemetry', '{}', { qos: 1 });
    await closed;
    await expect.poll(() => presence.events.at(-1)?.type).toBe('lost');
    expect(presence.events.at(-1)?.deviceId).toBe('dev-2');
  });

  it('closes a connection sending a frame above MAX_PACKET_BYTES, counted', async () => {
    const client = await connect('dev-4', 'dev-4');
    const closed = closedByBroker(client);
    client.publish('devices/dev-4/telemetry', Buffer.alloc(4096), { qos: 0 });
    await closed;
    expect(await limitCount(m, 'MAX_PACKET_BYTES')).toBe(1);
    await expect.poll(() => presence.events.at(-1)?.reason).toMatch(/exceeds MAX_PACKET_BYTES/);
  });

  it('disconnectDevice closes the connections of a device with the reason given', async () => {
    const client = await connect('dev-5', 'dev-5');
    await expect.poll(() => broker.isOnline('dev-5')).toBe(true);
    const closed = closedByBroker(client);
    expect(broker.disconnectDevice('dev-5', 'registry changed')).toBe(1);
    await closed;
    await expect
      .poll(() => presence.events.at(-1))
      .toMatchObject({ deviceId: 'dev-5', type: 'lost', reason: 'registry changed' });
  });
});
