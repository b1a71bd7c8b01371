import { createInbox, type NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandsFilter, commandsSubject, gatewayHeartbeatSubject } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * A command request against two gateways sharing one NATS: whichever gateway holds the device's
 * connection or session, exactly one answer comes, and it says what became of the command.
 */

const HEARTBEAT = '200ms';
/** Long enough for a second answer to show up if one were sent. */
const LISTEN_MS = 1_500;

let nats: NatsServer;
let nc: NatsConnection;
let a: Gateway;
let b: Gateway;
const clients: MqttClient[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sessionsAway = async (gateway: Gateway) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_sessions_away')?.get())?.values[0]?.value ?? 0;

/** Sends a command as a request and collects every answer for LISTEN_MS. */
async function answers(
  device: Pick<ProvisionedDevice, 'id' | 'tenant'>,
  path = 'reboot',
): Promise<unknown[]> {
  const inbox = createInbox();
  const got: unknown[] = [];
  const sub = nc.subscribe(inbox, { callback: (_err, msg) => void got.push(msg.json()) });
  nc.publish(commandsSubject(device.tenant, device.id, [path]), '{"now":true}', { reply: inbox });
  await sleep(LISTEN_MS);
  sub.unsubscribe();
  return got;
}

/** Provisions a device and waits until both gateways' registries have it. */
async function newDevice(id: string): Promise<ProvisionedDevice> {
  const device = await provision(nc, id, 'acme');
  await sleep(200);
  return device;
}

async function connect(gw: Gateway, device: ProvisionedDevice, clean = true): Promise<MqttClient> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.ports.mqtt}`, {
    clientId: device.id,
    username: device.id,
    password: device.secret,
    clean,
    reconnectPeriod: 0,
  });
  clients.push(client);
  return client;
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  const common = { LIVE_VIEW: 'false', HEARTBEAT_INTERVAL: HEARTBEAT, MAX_QUEUED_MESSAGES: '1' };
  ({ gateway: a } = await startGateway(nats.url, { ...common, GATEWAY_ID: 'gw-a' }));
  ({ gateway: b } = await startGateway(nats.url, { ...common, GATEWAY_ID: 'gw-b' }));
  await sleep(600); // each has seen the other's heartbeats
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await Promise.all([a?.close(), b?.close()]);
  await nc?.close();
  await nats?.dispose();
});

describe('one answer per command request, from whichever gateway', () => {
  it('delivered: handed to the device connected to one of them', async () => {
    const device = await newDevice('ans-online');
    const client = await connect(b, device);
    await client.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    const got = new Promise<string>((r) => client.once('message', (topic) => r(topic)));
    expect(await answers(device)).toEqual([{ delivered: true, status: 'delivered' }]);
    expect(await got).toBe(`devices/${device.id}/commands/reboot`);
  });

  it('queued: held in the persistent session of a device that is away, and handed over on its return', async () => {
    const device = await newDevice('ans-away');
    const client = await connect(a, device, false);
    await client.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    await client.endAsync();
    await sleep(100);
    expect(await answers(device)).toEqual([{ delivered: false, status: 'queued' }]);
    // MAX_QUEUED_MESSAGES is 1 here: the next one finds the queue full.
    expect(await answers(device, 'again')).toEqual([{ delivered: false, status: 'queue_full' }]);
    const back = await mqtt.connectAsync(`mqtt://127.0.0.1:${a.ports.mqtt}`, {
      clientId: device.id,
      username: device.id,
      password: device.secret,
      clean: false,
      reconnectPeriod: 0,
    });
    clients.push(back);
    const topic = await new Promise<string>((r) => back.once('message', (t) => r(t)));
    expect(topic).toBe(`devices/${device.id}/commands/reboot`);
  });

  it('delivered where the device moved to: the session it left on the other gateway is dropped', async () => {
    const device = await newDevice('ans-moved');
    const old = await connect(a, device, false);
    await old.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    await old.endAsync();
    await expect.poll(() => sessionsAway(a)).toBe(1);
    const now = await connect(b, device);
    await now.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    // Taken over (gateway/takeover.ts): nothing is queued at A any more for a return there.
    await expect.poll(() => sessionsAway(a)).toBe(0);
    expect(await answers(device)).toEqual([{ delivered: true, status: 'delivered' }]);
  });

  it('not_subscribed: connected, but not listening for commands', async () => {
    const device = await newDevice('ans-deaf');
    await connect(a, device);
    expect(await answers(device)).toEqual([{ delivered: false, status: 'not_subscribed' }]);
  });

  it('offline: a known device connected to neither, with no session', async () => {
    const device = await newDevice('ans-offline');
    const client = await connect(b, device);
    await client.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    await client.endAsync(); // a clean session ends with its connection
    await sleep(100);
    expect(await answers(device)).toEqual([{ delivered: false, status: 'offline' }]);
  });

  it('unknown_device: the tenant has no such device', async () => {
    expect(await answers({ id: 'ans-online', tenant: 'other' })).toEqual([
      { delivered: false, status: 'unknown_device', error: 'unknown device for this tenant' },
    ]);
  });

  it('a command sent without a reply subject is delivered all the same', async () => {
    const device = await newDevice('ans-fire');
    const client = await connect(a, device);
    await client.subscribeAsync(commandsFilter(device.id), { qos: 1 });
    const got = new Promise<string>((r) => client.once('message', (_t, payload) => r(payload.toString())));
    nc.publish(commandsSubject(device.tenant, device.id, ['x']), 'fire and forget');
    expect(await got).toBe('fire and forget');
  });

  it('says offline only when every gateway alive has answered: a silent one leaves the request unanswered', async () => {
    const offline = await newDevice('ans-ghosted');
    const online = await newDevice('ans-present');
    const client = await connect(a, online);
    await client.subscribeAsync(commandsFilter(online.id), { qos: 1 });
    // A gateway that beats but never replies to a relayed command (stuck, or cut off from its clients).
    const beat = () =>
      nc.publish(
        gatewayHeartbeatSubject('gw-ghost'),
        JSON.stringify({
          gateway: 'gw-ghost',
          at: new Date().toISOString(),
          intervalMs: 200,
          connections: 1,
        }),
      );
    beat();
    const ghost = setInterval(beat, 200);
    try {
      await sleep(300);
      expect(await answers(offline)).toEqual([]);
      // What is known is still said: delivered needs no one else's word.
      expect(await answers(online)).toEqual([{ delivered: true, status: 'delivered' }]);
    } finally {
      clearInterval(ghost);
    }
    await sleep(3 * 200 + 200); // three missed beats: gone
    expect(await answers(offline)).toEqual([{ delivered: false, status: 'offline' }]);
  });
});
