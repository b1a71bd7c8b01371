import type { NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sparkplugStateTopic } from '../../contract/sparkplug.js';
import { DEFAULT_SPARKPLUG_HOST_ID } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * The gateway as the Sparkplug host application of its edge nodes: an edge node configured with
 * SPARKPLUG_HOST_ID as its primary host publishes only while that host's retained STATE says online
 * (Sparkplug 3.0). With mqtt.js as the edge node: online when it subscribes, offline before a
 * graceful stop closes its connection.
 */

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let edge: ProvisionedDevice;
let client: MqttClient | undefined;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, { LIVE_VIEW: 'false' }));
  edge = await provision(nc, 'edge-host-1', 'acme', {}, { children: 'any' });
});

afterAll(async () => {
  await client?.endAsync(true);
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

it('announces itself online, retained, and offline before a graceful stop', async () => {
  const states: { online: boolean; timestamp: number; retained: boolean }[] = [];
  client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.mqtt}`, {
    clientId: edge.id,
    username: edge.id,
    password: edge.secret,
    reconnectPeriod: 0,
  });
  let first: () => void = () => undefined;
  const arrived = new Promise<void>((resolve) => {
    first = resolve;
  });
  client.on('message', (_topic, payload, packet) => {
    states.push({ ...JSON.parse(payload.toString()), retained: packet.retain });
    first();
  });
  const granted = await client.subscribeAsync(sparkplugStateTopic(DEFAULT_SPARKPLUG_HOST_ID), { qos: 1 });
  expect(granted.map((g) => g.qos)).toEqual([1]);
  await arrived;
  expect(states).toEqual([{ online: true, timestamp: expect.any(Number), retained: true }]);
  expect(states[0]!.timestamp).toBeLessThanOrEqual(Date.now());

  const closed = new Promise<void>((resolve) => client!.once('close', () => resolve()));
  await gateway.close();
  await closed;
  expect(states.map((s) => s.online)).toEqual([true, false]);
  expect(states[1]!.timestamp).toBeGreaterThanOrEqual(states[0]!.timestamp);
});
