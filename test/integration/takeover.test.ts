import type { NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  commandsFilter,
  commandsSubject,
  PRESENCE_STREAM,
  type PresenceEvent,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { PresenceTracker } from '../../processors/presence/presence-tracker.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, type Started, startScript } from '../kit/processes.js';
import { waitForStream } from '../kit/streams.js';

/** Two gateways behind one "load balancer": a device reconnecting to the other one takes itself over. */
let nats: NatsServer;
let nc: NatsConnection;
let a: Gateway;
let b: Gateway;
const clients: MqttClient[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  // Quick heartbeats: a command waits for the replies of the gateways heard from, so each must have heard the other.
  const common = { LIVE_VIEW: 'false', HEARTBEAT_INTERVAL: '200ms' };
  ({ gateway: a } = await startGateway(nats.url, { ...common, GATEWAY_ID: 'gw-a' }));
  ({ gateway: b } = await startGateway(nats.url, { ...common, GATEWAY_ID: 'gw-b' }));
  await new Promise((r) => setTimeout(r, 600)); // each has seen the other's heartbeats
});

afterAll(async () => {
  for (const c of clients) c.end(true);
  await a?.close();
  await b?.close();
  await nc?.close();
  await nats?.dispose();
});

async function metric(gateway: Gateway, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await gateway.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
}

async function connect(gateway: Gateway, device: ProvisionedDevice, options: mqtt.IClientOptions = {}) {
  const client = await connectDevice(gateway.ports.mqtt, device, options);
  clients.push(client);
  return client;
}

/**
 * Watches a client's connection from now; `within(ms)` resolves with how long after `since()` (the
 * other gateway's CONNACK, say) it was closed, 0 if before, and rejects if it is still open `ms` after.
 */
function watchClose(client: MqttClient) {
  let closedAt: number | undefined;
  const closed = new Promise<void>((resolve) =>
    client.once('close', () => {
      closedAt = performance.now();
      resolve();
    }),
  );
  return {
    async within(ms: number, since = performance.now()): Promise<number> {
      const left = Math.max(0, since + ms - performance.now());
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        closed,
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`connection still open ${ms} ms later`)), left);
        }),
      ]).finally(() => clearTimeout(timer));
      return Math.max(0, closedAt! - since);
    },
  };
}

const presenceOf = (deviceId: string, done: (events: PresenceEvent[]) => boolean) =>
  waitForStream<PresenceEvent>(nc, PRESENCE_STREAM, (m) =>
    done(m.filter((e) => e.data.deviceId === deviceId).map((e) => e.data)),
  ).then((m) => m.filter((e) => e.data.deviceId === deviceId).map((e) => e.data));

describe('one connection per client id across gateways', () => {
  it("closes the first gateway's connection within a second; presence ends online at the second", async () => {
    const dev = await provision(nc, 'move-1', 'acme');
    const atA = await connect(a, dev);
    await expect.poll(() => metric(a, 'gateway_mqtt_connections')).toBe(1);
    const closed = watchClose(atA);
    const atB = await connect(b, dev);
    const ms = await closed.within(1_000);
    console.log(`[takeover] connection at gw-a closed ${ms.toFixed(0)} ms after gw-b's CONNACK`);
    expect(atB.connected).toBe(true);
    expect(await metric(a, 'gateway_takeovers_total', { what: 'connection' })).toBe(1);
    expect(await metric(b, 'gateway_takeovers_total', { what: 'connection' })).toBe(0);

    const events = await presenceOf(dev.id, (e) => e.some((x) => x.type === 'lost'));
    // B's `connected` and A's `lost` come from two gateways: their order in PRESENCE is not fixed.
    expect(events.map((e) => [e.gateway, e.type, e.reason])).toEqual(
      expect.arrayContaining([
        ['gw-a', 'connected', undefined],
        ['gw-b', 'connected', undefined],
        ['gw-a', 'lost', 'taken over'],
      ]),
    );
    expect(events).toHaveLength(3);
    // What the processors' presence owner makes of them.
    const tracker = new PresenceTracker({ defaultHeartbeatIntervalMs: 5_000, nowMs: Date.now() });
    for (const e of events) tracker.apply(e);
    expect(tracker.get('acme', dev.id)).toMatchObject({
      online: true,
      connections: [expect.objectContaining({ gateway: 'gw-b', clientId: dev.id })],
    });
  });

  it("leaves the device's other client ids alone", async () => {
    const dev = await provision(nc, 'move-2', 'acme');
    const modem = await connect(a, dev, { clientId: `${dev.id}:modem` });
    await connect(b, dev, { clientId: `${dev.id}:app` });
    await new Promise((r) => setTimeout(r, 500));
    expect(modem.connected).toBe(true);
  });

  it('drops the persistent session left on the first gateway, connected or away', async () => {
    const dev = await provision(nc, 'move-3', 'acme');
    const persistent = { clean: false, clientId: dev.id };
    // Connected at A with a session: taken over, its session dropped rather than kept away.
    const first = await connect(a, dev, persistent);
    await first.subscribeAsync(commandsFilter(dev.id), { qos: 1 });
    const closed = watchClose(first);
    const atB = await connect(b, dev, persistent);
    await closed.within(1_000);
    await expect.poll(() => metric(a, 'gateway_takeovers_total', { what: 'session' })).toBe(1);
    expect(await metric(a, 'gateway_sessions_away')).toBe(0);

    // Away from B (dropped without DISCONNECT), then back at A: B's away session goes too.
    await atB.subscribeAsync(commandsFilter(dev.id), { qos: 1 });
    atB.stream.destroy();
    await expect.poll(() => metric(b, 'gateway_sessions_away')).toBe(1);
    const again = await connect(a, dev, persistent);
    await expect.poll(() => metric(b, 'gateway_sessions_away')).toBe(0);
    expect(await metric(b, 'gateway_takeovers_total', { what: 'session' })).toBe(1);

    // A command now reaches the device where it is, and nothing is queued at B for its return.
    await again.subscribeAsync(commandsFilter(dev.id), { qos: 1 });
    const reply = await nc.request(commandsSubject('acme', dev.id), '{}', { timeout: 5_000 });
    expect(reply.json()).toEqual({ delivered: true, status: 'delivered' });
  });
});

describe('two gateway processes', () => {
  const started: Started[] = [];

  afterAll(() => {
    for (const s of started) s.kill();
  });

  async function gatewayProcess(id: string): Promise<number> {
    const mqttPort = await freePort();
    const httpPort = await freePort();
    const s = startScript('gateway/main.ts', [], {
      NATS_URL: nats.url,
      GATEWAY_ID: id,
      AUTH_MODE: 'open',
      MQTT_PORT: String(mqttPort),
      MQTT_WS_PORT: String(await freePort()),
      HTTP_PORT: String(httpPort),
      BIND_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    });
    started.push(s);
    const deadline = Date.now() + 25_000;
    for (;;) {
      const status = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then(
        (r) => r.status,
        () => 0,
      );
      if (status === 200) return mqttPort;
      if (Date.now() > deadline) throw new Error(`gateway ${id} did not become ready:\n${s.output().stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('closes the connection at the first process within a second of connecting to the second', async () => {
    const [portA, portB] = await Promise.all([gatewayProcess('gw-p1'), gatewayProcess('gw-p2')]);
    const options = { clientId: 'proc-dev', username: 'proc-dev', reconnectPeriod: 0, connectTimeout: 5_000 };
    const atA = await mqtt.connectAsync(`mqtt://127.0.0.1:${portA}`, options);
    clients.push(atA);
    const closed = watchClose(atA);
    const atB = await mqtt.connectAsync(`mqtt://127.0.0.1:${portB}`, options);
    clients.push(atB);
    await closed.within(1_000);
    expect(atB.connected).toBe(true);
  }, 60_000);
});
