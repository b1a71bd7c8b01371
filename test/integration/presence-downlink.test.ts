import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  commandsFilter,
  commandsSubject,
  PRESENCE_STREAM,
  type PresenceEvent,
  presenceSubject,
  statusTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { waitForStream } from '../kit/streams.js';

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let dev: ProvisionedDevice;
let cmd: ProvisionedDevice;

const presenceOf = (deviceId: string, count: number) =>
  waitForStream<PresenceEvent>(
    nc,
    PRESENCE_STREAM,
    (m) => m.filter((e) => e.data.deviceId === deviceId).length >= count,
    10_000,
  ).then((m) => m.filter((e) => e.data.deviceId === deviceId).map((e) => e.data));

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  dev = await provision(nc, 'pres-1', 'acme');
  cmd = await provision(nc, 'cmd-1', 'acme');
  ({ gateway } = await startGateway(nats.url, { GATEWAY_ID: 'gw-test' }));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('presence', () => {
  it('connected, birth status, clean disconnect, then a lost connection with its last will', async () => {
    const client = await connectDevice(gateway.ports.mqtt, dev);
    await client.publishAsync(statusTopic(dev.id), JSON.stringify({ online: true, fw: '1.4.2' }), { qos: 1 });
    await client.endAsync();
    const withWill = await connectDevice(gateway.ports.mqtt, dev, {
      will: { topic: statusTopic(dev.id), payload: Buffer.from('{"online":false}'), qos: 1, retain: false },
    });
    withWill.stream.destroy(); // the network goes away: no DISCONNECT, so the will is published
    const events = await presenceOf(dev.id, 6);
    // aedes publishes the will while closing, before it unregisters the client.
    expect(events.map((e) => e.type)).toEqual([
      'connected',
      'status',
      'disconnected',
      'connected',
      'status',
      'lost',
    ]);
    expect(events[1]).toMatchObject({
      status: { online: true, fw: '1.4.2' },
      tenant: 'acme',
      clientId: dev.id,
    });
    expect(events[4]!.status).toEqual({ online: false });
    expect(events[5]!.reason).toBeTruthy();
    for (const e of events) expect(e.gateway).toBe('gw-test');
    const stored = await waitForStream(nc, PRESENCE_STREAM, (m) => m.length >= 6);
    expect(stored.every((m) => m.subject === presenceSubject('acme', dev.id))).toBe(true);
  });
});

describe('downlink', () => {
  it('delivers commands.{tenant}.{device}.{path} to devices/{device}/commands/{path} and answers the request', async () => {
    const client = await connectDevice(gateway.ports.mqtt, cmd);
    await client.subscribeAsync(commandsFilter(cmd.id), { qos: 1 });
    const received = new Promise<{ topic: string; payload: string }>((resolve) =>
      client.once('message', (topic, payload) => resolve({ topic, payload: payload.toString() })),
    );
    const reply = await nc.request(commandsSubject('acme', cmd.id, ['config', 'set']), '{"interval":5}', {
      timeout: 5_000,
    });
    expect(reply.json()).toEqual({ delivered: true, status: 'delivered' });
    expect(await received).toEqual({
      topic: `devices/${cmd.id}/commands/config/set`,
      payload: '{"interval":5}',
    });
    await client.endAsync();
  });

  it('says so for a device the tenant does not have', async () => {
    const reply = await nc.request(commandsSubject('other-tenant', cmd.id), '{}', { timeout: 5_000 });
    expect(reply.json()).toEqual({
      delivered: false,
      status: 'unknown_device',
      error: 'unknown device for this tenant',
    });
  });

  it('answers offline for a device connected to no gateway and without a session', async () => {
    const reply = await nc.request(commandsSubject('acme', dev.id), '{}', { timeout: 5_000 });
    expect(reply.json()).toEqual({ delivered: false, status: 'offline' });
  });
});
