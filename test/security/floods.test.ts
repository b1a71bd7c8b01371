import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CanonicalEvent, TELEMETRY_STREAM, telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { measurePubacks, showLatencies as show } from '../kit/latency.js';
import { closedByBroker, connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { type Started, startScript } from '../kit/processes.js';
import { connectPacket, pool, type RawOutcome, rawConnect } from '../kit/raw-mqtt.js';
import { readStream } from '../kit/streams.js';

/**
 * Floods against a real gateway: one device publishing far above DEVICE_MAX_MSGS_PER_SEC (from its
 * own process) while 20 others publish QoS 1 at a normal rate, and a storm of a few thousand
 * CONNECTs. Latency figures are printed; assertions are loose, since two cores are shared with
 * whatever else runs.
 */

const DEVICES = 20;
const RATE_PER_SEC = 100;
const BURST = 200;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let devices: ProvisionedDevice[];
let flooder: ProvisionedDevice;
let stormDevice: ProvisionedDevice;
const clients: MqttClient[] = [];
const children: Started[] = [];
const gateways: Gateway[] = [];

const metricValue = async (gw: Gateway, name: string, labels: Record<string, string> = {}) =>
  (await gw.metrics.registry.getSingleMetric(name)!.get()).values.find((v) =>
    Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  )?.value ?? 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function startFlooder(port: number): { child: Started; stats: () => Record<string, number> } {
  const child = startScript('test/security/clients/flood.ts', [String(port), flooder.id, flooder.secret]);
  children.push(child);
  const stats = () => {
    const lines = child.output().stdout.trim().split('\n').filter(Boolean);
    return lines.length ? (JSON.parse(lines.at(-1)!) as Record<string, number>) : {};
  };
  return { child, stats };
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  devices = [];
  for (let i = 0; i < DEVICES; i++) devices.push(await provision(nc, `calm-${i}`, 'acme'));
  flooder = await provision(nc, 'flooder', 'acme');
  stormDevice = await provision(nc, 'storm', 'acme');
  ({ gateway } = await startGateway(nats.url, {
    DEVICE_MAX_MSGS_PER_SEC: String(RATE_PER_SEC),
    DEVICE_MSGS_BURST: String(BURST),
    // Loopback is one source: with the failure limit on, the storm would be refused by it alone and
    // never reach the verification queue this file exercises (test/security/auth.test.ts covers it).
    AUTH_FAILURES_PER_MINUTE: '0',
    AUTH_VERIFY_QUEUE: '64',
  }));
  gateways.push(gateway);
  for (const d of devices) clients.push(await connectDevice(gateway.ports.mqtt, d, { keepalive: 30 }));
}, 60_000);

afterAll(async () => {
  for (const c of children) c.kill();
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await Promise.all(gateways.map((g) => g.close()));
  await nc?.close();
  await nats?.dispose();
});

describe('a device publishing far above its rate', () => {
  it('is throttled and cut off, while the others keep getting their PUBACKs', async () => {
    const ids = devices.map((d) => d.id);
    const calm = await measurePubacks(clients, ids, 4_000);
    console.log(`[flood] ${DEVICES} devices at 10/s, no flood:          ${show(calm)}`);

    const started = Date.now();
    const { child, stats } = startFlooder(gateway.ports.mqtt);
    await until(() => (stats().written ?? 0) > 10_000, 'the flooder to be flooding');
    const flooded = await measurePubacks(clients, ids, 6_000);
    const flood = stats();
    child.kill();
    await child.finished;
    const floodSeconds = (Date.now() - started) / 1000;
    console.log(`[flood] same, one device flooding QoS 0 (limited):   ${show(flooded)}`);

    const delayed = await metricValue(gateway, 'gateway_publish_throttled_total', { action: 'delayed' });
    const cutOff = await metricValue(gateway, 'gateway_publish_throttled_total', { action: 'disconnected' });
    await sleep(3_000); // what was delayed is stored by now
    const stored = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.data.deviceId === flooder.id,
    ).length;
    console.log(
      `[flood] flooder wrote ${flood.written} publishes over ${flood.connections} connections in ` +
        `${floodSeconds.toFixed(1)} s; ${stored} stored, ${delayed} delayed, ${cutOff} times cut off`,
    );

    expect(flooded.failed).toBe(0);
    expect(flooded.acked).toBe(flooded.sent);
    expect(clients.every((c) => c.connected)).toBe(true);
    expect(delayed).toBeGreaterThan(0);
    expect(cutOff).toBeGreaterThan(0);
    // The budget: a burst, the rate, and one burst of debt that was delayed rather than refused.
    expect(stored).toBeLessThanOrEqual(2 * BURST + RATE_PER_SEC * floodSeconds * 1.2);
    expect(flood.written).toBeGreaterThan(5 * stored);
  }, 60_000);
});

describe('the same flood with the rate limit off', () => {
  it('is what the limit saves the others from (figures only)', async () => {
    const { gateway: open } = await startGateway(nats.url, { DEVICE_MAX_MSGS_PER_SEC: '0' });
    gateways.push(open);
    const others: MqttClient[] = [];
    for (const d of devices)
      others.push(await connectDevice(open.ports.mqtt, d, { clientId: `${d.id}:nolimit`, keepalive: 30 }));
    clients.push(...others);
    const { child, stats } = startFlooder(open.ports.mqtt);
    await until(() => (stats().written ?? 0) > 10_000, 'the flooder to be flooding');
    const flooded = await measurePubacks(
      others,
      devices.map((d) => d.id),
      5_000,
    );
    child.kill();
    await child.finished;
    const dropped = await metricValue(open, 'gateway_events_total', { outcome: 'dropped' });
    console.log(
      `[flood] same, one device flooding QoS 0, NO limit:    ${show(flooded)}; ` +
        `${stats().written} flood publishes written, ${dropped} QoS 0 events dropped over budget`,
    );
    // Nothing is promised here: on a loaded machine the others may get no PUBACK at all in the window,
    // which is the point of the limit. Only that the flood really ran is checked.
    expect(stats().written).toBeGreaterThan(10_000);
  }, 60_000);
});

describe('a connection storm', () => {
  it('is answered, the verification queue sheds what it cannot take, and the gateway serves on', async () => {
    const STORM = 3_000;
    const health: number[] = [];
    let storming = true;
    const probe = (async () => {
      while (storming) {
        const t = performance.now();
        const res = await fetch(`http://127.0.0.1:${gateway.ports.http}/healthz`);
        health.push(performance.now() - t);
        expect(res.status).toBe(200);
        await sleep(100);
      }
    })();
    const attempts = Array.from({ length: STORM }, (_, i) => {
      switch (i % 3) {
        case 0:
          return connectPacket({
            clientId: `storm:${i}`,
            username: stormDevice.id,
            password: stormDevice.secret,
          });
        case 1:
          return connectPacket({ clientId: `storm:${i}`, username: stormDevice.id, password: `guess-${i}` });
        default:
          return connectPacket({ clientId: `ghost-${i}`, username: `ghost-${i}`, password: `guess-${i}` });
      }
    });
    const started = performance.now();
    const outcomes = await pool(attempts, 1_000, (packet) => rawConnect(gateway.ports.mqtt, packet, 20_000));
    const seconds = (performance.now() - started) / 1000;
    storming = false;
    await probe;

    const tally = new Map<RawOutcome, number>();
    for (const o of outcomes) tally.set(o, (tally.get(o) ?? 0) + 1);
    health.sort((x, y) => x - y);
    console.log(
      `[storm] ${STORM} CONNECTs (1/3 valid, 1/3 wrong secret, 1/3 unknown device) in ${seconds.toFixed(1)} s: ` +
        `${[...tally].map(([o, n]) => `${o === 0 ? 'accepted' : o}: ${n}`).join(', ')}; ` +
        `/healthz during it p50 ${health[Math.floor(health.length / 2)]?.toFixed(1)} ms, max ${health.at(-1)?.toFixed(1)} ms`,
    );
    // Every CONNECT got an answer: accepted, refused (4), or shed as "server unavailable" (3). On
    // two cores shared with other suites, a few may instead be lost in the kernel's accept queue
    // (reset, or SYN retransmits past the deadline): a client's problem to retry, not the gateway's.
    const unanswered = outcomes.filter((o) => o !== 0 && o !== 3 && o !== 4);
    expect(unanswered.filter((o) => o === 'closed' || o === 'error not a CONNACK')).toEqual([]);
    expect(unanswered.length).toBeLessThan(STORM * 0.1);
    expect(tally.get(0)).toBeGreaterThan(0);
    expect(
      await metricValue(gateway, 'gateway_mqtt_connects_total', { result: 'server_busy' }),
    ).toBeGreaterThan(0);

    // Afterwards: the queue drains, the devices already connected never noticed, a new one gets in.
    await until(async () => (await metricValue(gateway, 'gateway_auth_verify_queued')) === 0, 'the queue');
    expect(clients.every((c) => c.connected)).toBe(true);
    await clients[0]!.publishAsync(telemetryTopic(devices[0]!.id), '{"metrics":{"after":1}}', { qos: 1 });
    const fresh = await connectDevice(gateway.ports.mqtt, devices[1]!, {
      clientId: `${devices[1]!.id}:fresh`,
    });
    clients.push(fresh);
    await fresh.publishAsync(telemetryTopic(devices[1]!.id), '{"metrics":{"after":1}}', { qos: 1 });
    expect((await fetch(`http://127.0.0.1:${gateway.ports.http}/readyz`)).status).toBe(200);
  }, 60_000);
});

describe('thousands of subscriptions', () => {
  it('close the connection past MAX_SUBSCRIPTIONS_PER_CLIENT (100); other devices are unaffected', async () => {
    const d = devices[2]!;
    const own = (prefix: string, n: number) =>
      Array.from({ length: n }, (_, i) => `devices/${d.id}/commands/${prefix}${i}`);
    const greedy = async (name: string) => {
      const client = await connectDevice(gateway.ports.mqtt, d, { clientId: `${d.id}:${name}` });
      client.on('error', () => {});
      return client;
    };

    // Within the cap, and the same filters again, is fine.
    const modest = await greedy('modest');
    await modest.subscribeAsync(own('a', 60));
    await modest.subscribeAsync(own('a', 60));
    expect(modest.connected).toBe(true);
    await modest.endAsync();

    // Thousands in one SUBSCRIBE; thousands in separate ones; and refused (foreign) ones.
    const cases: [string, (c: MqttClient) => void][] = [
      ['one-packet', (c) => c.subscribe(own('b', 5_000), () => {})],
      [
        'many-packets',
        (c) => {
          for (const f of own('c', 2_000)) c.subscribe(f, () => {});
        },
      ],
      [
        'foreign',
        (c) => {
          for (let i = 0; i < 500; i++) c.subscribe(`other/${i}/#`, () => {});
        },
      ],
    ];
    for (const [name, subscribe] of cases) {
      const client = await greedy(name);
      const closed = closedByBroker(client, 10_000);
      subscribe(client);
      await closed;
      client.end(true);
    }
    expect(await metricValue(gateway, 'gateway_subscription_limit_total')).toBe(cases.length);
    expect(clients.every((c) => c.connected)).toBe(true);
    await clients[3]!.publishAsync(telemetryTopic(devices[3]!.id), '{"metrics":{"after":1}}', { qos: 1 });
  });
});
