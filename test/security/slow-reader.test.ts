import { createInbox, type NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandsFilter, commandsSubject, presenceSubject } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { RawSession } from '../kit/raw-mqtt.js';

/**
 * A device that subscribes to its commands and then stops reading its socket must cost the gateway
 * a bounded amount and nobody else anything. Before: aedes completed each delivery only once the
 * subscriber's socket drained, and its mqemitter runs at most 100 publishes at once, so 200 commands
 * of 64 KiB to a device that stopped reading held every publish of the broker until aedes'
 * drainTimeout (30 s) closed the stuck connection: a command to another device was delivered after
 * 29.6 s, and its request never answered (the gathering gateway gives up after 1 s).
 */

const UNSENT_BYTES = 256 * 1024;
const MAX_QUEUED = 20;
const DRAIN_TIMEOUT_MS = 4_000;
const BURST = 200;
const ONE_BY_ONE = 100;
const COMMAND_BYTES = 64 * 1024;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
const clients: MqttClient[] = [];
const sessions: RawSession[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const limitCount = async (limit: string) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

const connections = async () =>
  (await gateway.metrics.registry.getSingleMetric('gateway_mqtt_connections')!.get()).values[0]?.value;

/** A command request: its answer and how long it took (the request times out after `timeoutMs`). */
async function command(device: ProvisionedDevice, payload: string | Uint8Array, timeoutMs = 5_000) {
  const t0 = performance.now();
  const answer = await nc
    .request(commandsSubject(device.tenant, device.id, ['ping']), payload, { timeout: timeoutMs })
    .then(
      (m) => m.json<{ status: string }>().status,
      () => 'no answer',
    );
  return { answer, ms: performance.now() - t0 };
}

/** Sends `count` commands as requests at once; resolves with their answers' statuses once all came. */
function commandsTo(device: ProvisionedDevice, count: number, payload: Uint8Array) {
  const inbox = createInbox();
  const statuses: string[] = [];
  const t0 = performance.now();
  const all = new Promise<{ statuses: string[]; ms: number }>((resolve) => {
    const sub = nc.subscribe(inbox, {
      callback: (_err, msg) => {
        statuses.push(msg.json<{ status: string }>().status);
        if (statuses.length === count) {
          sub.unsubscribe();
          resolve({ statuses, ms: performance.now() - t0 });
        }
      },
    });
  });
  for (let i = 0; i < count; i++)
    nc.publish(commandsSubject(device.tenant, device.id, ['blob']), payload, { reply: inbox });
  return { all, statuses };
}

async function listeningDevice(device: ProvisionedDevice): Promise<MqttClient> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.mqtt}`, {
    clientId: device.id,
    username: device.id,
    password: device.secret,
    reconnectPeriod: 0,
  });
  clients.push(client);
  await client.subscribeAsync(commandsFilter(device.id), { qos: 1 });
  return client;
}

/** A raw device subscribed to its commands that then stops reading its socket. */
async function stuckDevice(device: ProvisionedDevice, clean: boolean): Promise<RawSession> {
  const session = await RawSession.open(gateway.ports.mqtt, {
    clientId: device.id,
    username: device.id,
    password: device.secret,
    clean,
  });
  sessions.push(session);
  expect(await session.subscribe(commandsFilter(device.id), 1, 1)).toBe(1);
  session.stopReading();
  return session;
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    MAX_UNSENT_BYTES_PER_CLIENT: String(UNSENT_BYTES),
    DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
    MAX_QUEUED_MESSAGES: String(MAX_QUEUED),
  }));
});

afterAll(async () => {
  for (const s of sessions) s.socket.destroy();
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('a device that stops reading', () => {
  it('never delays another device’s commands, and holds at most MAX_UNSENT_BYTES_PER_CLIENT', async () => {
    const slow = await provision(nc, 'slow-reader');
    const good = await provision(nc, 'good-reader');
    await sleep(200); // the gateway's registry has them
    await stuckDevice(slow, true);
    const presence: { type: string; reason?: string }[] = [];
    nc.subscribe(presenceSubject(slow.tenant, slow.id), {
      callback: (_e, m) => void presence.push(m.json()),
    });
    const listener = await listeningDevice(good);
    const got: string[] = [];
    listener.on('message', (_t, payload) => got.push(payload.toString()));

    const before = await command(good, 'before');
    expect(before.answer).toBe('delivered');

    // 200 commands of 64 KiB at once to the device that stopped reading (before: every publish of the
    // broker waited for its socket, up to aedes' drainTimeout), and then one to the other device.
    const payload = new Uint8Array(COMMAND_BYTES).fill(0x62);
    const burst = commandsTo(slow, BURST, payload);
    await nc.flush();
    const during = await command(good, 'during');
    const flood = await Promise.race([burst.all, sleep(5_000).then(() => undefined)]);
    const count = (statuses: string[], s: string) => statuses.filter((x) => x === s).length;
    console.info(
      `command to the other device: before ${before.ms.toFixed(0)} ms, during ${during.ms.toFixed(0)} ms (${during.answer}); ` +
        `${BURST} × ${COMMAND_BYTES} B at once to the stuck one answered in ${flood?.ms.toFixed(0) ?? '> 5,000'} ms: ` +
        `${count(burst.statuses, 'delivered')} delivered, ${count(burst.statuses, 'backlogged')} backlogged`,
    );
    expect(during.answer).toBe('delivered');
    expect(during.ms).toBeLessThan(1_000);
    await expect.poll(() => got).toContain('during');
    // Each command to the stuck device is answered at once too: handed over, or refused.
    expect(flood?.ms).toBeLessThan(1_000);
    expect(count(burst.statuses, 'delivered') + count(burst.statuses, 'backlogged')).toBe(BURST);

    // Then one after another: the kernel's socket buffers take a few MiB, then what is written stays
    // in the gateway, up to the bound; from there on every command is refused, at once.
    const statuses: string[] = [];
    let slowest = 0;
    for (let i = 0; i < ONE_BY_ONE; i++) {
      const { answer, ms } = await command(slow, payload, 2_000);
      statuses.push(answer);
      slowest = Math.max(slowest, ms);
    }
    console.info(
      `then ${ONE_BY_ONE} one by one, slowest answer ${slowest.toFixed(0)} ms: ` +
        `${count(statuses, 'delivered')} delivered, ${count(statuses, 'backlogged')} backlogged`,
    );
    expect(slowest).toBeLessThan(1_000);
    const firstRefused = statuses.indexOf('backlogged');
    expect(firstRefused).toBeGreaterThanOrEqual(0);
    expect(statuses.slice(0, firstRefused).every((x) => x === 'delivered')).toBe(true);
    expect(statuses.slice(firstRefused).every((x) => x === 'backlogged')).toBe(true);
    // Taken in all: what the loopback's kernel buffers hold (a few MiB) and the bound, plus one command.
    const taken = count(burst.statuses, 'delivered') + firstRefused;
    expect(taken * COMMAND_BYTES).toBeLessThan(16 * 1024 * 1024);
    expect(await limitCount('MAX_UNSENT_BYTES_PER_CLIENT')).toBe(BURST + ONE_BY_ONE - taken);

    // A device that does not take what is buffered for it within DRAIN_TIMEOUT_MS is cut off (seen
    // from the gateway: the stuck socket, not reading, would not notice).
    await expect
      .poll(() => limitCount('DRAIN_TIMEOUT_MS'), { timeout: DRAIN_TIMEOUT_MS + 2_000, interval: 100 })
      .toBe(1);
    await expect.poll(() => connections()).toBe(1);
    await expect.poll(() => presence.at(-1)).toMatchObject({ type: 'lost', reason: 'drain timeout' });
    // And commands to the other device went on regardless.
    expect((await command(good, 'after')).answer).toBe('delivered');
  });

  it('with a persistent session: refused commands leave the others it was sent alone', async () => {
    // aedes clears a refused forward from a persistent session by a packet id it never got, which
    // removed another command of the same burst not yet written: its write failed ('no such
    // packet') and the connection was closed at once.
    const slow = await provision(nc, 'slow-persistent');
    await sleep(200);
    const presence: { type: string; reason?: string }[] = [];
    nc.subscribe(presenceSubject(slow.tenant, slow.id), {
      callback: (_e, m) => void presence.push(m.json()),
    });
    await stuckDevice(slow, false);
    const burst = commandsTo(slow, MAX_QUEUED, new Uint8Array(COMMAND_BYTES).fill(0x64));
    const { statuses, ms } = await burst.all;
    expect(ms).toBeLessThan(1_000);
    expect(statuses.filter((s) => s === 'backlogged').length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 'delivered' || s === 'backlogged')).toBe(true);
    await sleep(500);
    expect(presence.map((p) => p.type)).toEqual(['connected']);
  });
});

describe('a device that reads its commands and never acknowledges them', () => {
  it('holds at most MAX_QUEUED_MESSAGES of them in its persistent session; beyond, backlogged', async () => {
    // aedes keeps each QoS 1 command to a persistent session until its PUBACK, to send it again on a
    // reconnect [MQTT-4.4.0-1]: 1,000 commands of 16 KiB to a device that never acknowledged held
    // 15.6 MiB more, growing with every command for as long as it stayed connected.
    const device = await provision(nc, 'no-pubacks');
    await sleep(200);
    const session = await RawSession.open(gateway.ports.mqtt, {
      clientId: device.id,
      username: device.id,
      password: device.secret,
      clean: false,
    });
    sessions.push(session);
    session.acknowledge = false;
    expect(await session.subscribe(commandsFilter(device.id), 1, 1)).toBe(1);
    const limitBefore = await limitCount('MAX_QUEUED_MESSAGES');
    const statuses: string[] = [];
    for (let i = 0; i < 2 * MAX_QUEUED; i++) statuses.push((await command(device, `c${i}`)).answer);
    expect(statuses).toEqual([
      ...Array<string>(MAX_QUEUED).fill('delivered'),
      ...Array<string>(MAX_QUEUED).fill('backlogged'),
    ]);
    await expect.poll(() => session.received.length).toBe(MAX_QUEUED);
    expect(await limitCount('MAX_QUEUED_MESSAGES')).toBe(limitBefore + MAX_QUEUED);
    // The connection stays; acknowledged, a command makes room for the next.
    session.puback(session.received[0]!.messageId!);
    await expect.poll(async () => (await command(device, 'after')).answer).toBe('delivered');
    await expect.poll(() => session.received.at(-1)?.bytes).toBe('after'.length);
  });
});
