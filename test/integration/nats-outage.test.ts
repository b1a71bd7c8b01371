import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type CanonicalEvent, TELEMETRY_STREAM, telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

let nats: NatsServer;
let gateway: Gateway;
let device: ProvisionedDevice;

async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const readyz = async () => {
  const res = await fetch(`http://127.0.0.1:${gateway.ports.http}/readyz`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; missing: string[] } };
};

beforeAll(async () => {
  nats = await startNatsServer();
  const nc = await natsClient(nats.url);
  device = await provision(nc, 'outage-1', 'acme');
  await nc.close();
  // Keepalive 1 below (under the default minimum) keeps the test short.
  ({ gateway } = await startGateway(nats.url, { ACK_TIMEOUT_MS: '500', MIN_KEEPALIVE_SECONDS: '1' }));
});

afterAll(async () => {
  await gateway?.close();
  await nats?.dispose();
});

it('withholds PUBACKs while NATS is down, stays up, and stores each acknowledged message exactly once after', async () => {
  const client = await connectDevice(gateway.ports.mqtt, device);
  const topic = telemetryTopic(device.id);
  const reading = (seq: number) =>
    JSON.stringify({ seq, ts: Date.now(), metrics: { temperature: 20 + seq } });
  for (let seq = 1; seq <= 5; seq++) await client.publishAsync(topic, reading(seq), { qos: 1 });
  expect((await readyz()).status).toBe(200);

  await nats.stop();
  await until(() => gateway.notReady().includes('nats'), 'the gateway to notice');
  const acked = new Set<number>();
  const inFlight = Array.from({ length: 10 }, (_, i) => i + 6).map((seq) =>
    client.publishAsync(topic, reading(seq), { qos: 1 }).then(() => acked.add(seq)),
  );
  // Bounded real wait: what is checked is that no acknowledgement arrives while NATS is away.
  await new Promise((r) => setTimeout(r, 1_500));
  expect(acked.size).toBe(0);
  expect(await readyz()).toEqual({ status: 503, body: { ready: false, missing: ['nats'] } });
  expect(client.connected).toBe(true);

  await nats.restart();
  await Promise.all(inFlight);
  expect([...acked].sort((x, y) => x - y)).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  await until(async () => (await readyz()).status === 200, 'readiness to return');

  const nc: NatsConnection = await natsClient(nats.url);
  const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
    (e) => e.data.deviceId === device.id,
  );
  await nc.close();
  expect(events.map((e) => e.data.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
  await until(async () => {
    const inflight = await gateway.metrics.registry.getSingleMetric('gateway_jetstream_in_flight')!.get();
    return inflight.values[0]?.value === 0;
  }, 'nothing left in flight');
  await client.endAsync();
});

it('gives up held publishes of a device that disconnects during the outage; its retransmission is stored once', async () => {
  const topic = telemetryTopic(device.id);
  const ts = Date.now();
  const payload = JSON.stringify({ seq: 1000, ts, metrics: { temperature: 1 } });
  // While its publish is held, aedes reads nothing more from that socket, so a vanished device is
  // noticed by the MQTT keepalive (1.5 × keepalive [MQTT-3.1.2-24]); 1 s keeps the test short.
  const first = await connectDevice(gateway.ports.mqtt, device, { keepalive: 1 });
  await nats.stop();
  await until(() => gateway.notReady().includes('nats'), 'the gateway to notice');
  first.publish(topic, payload, { qos: 1 });
  await until(async () => {
    const v = await gateway.metrics.registry.getSingleMetric('gateway_jetstream_in_flight')!.get();
    return (v.values[0]?.value ?? 0) > 0;
  }, 'the publish to be held');
  first.end(true); // the device drops off without its PUBACK
  // (The device's `lost` presence event stays held: presence is retried on its own clock.)
  await until(async () => {
    const v = await gateway.metrics.registry.getSingleMetric('gateway_mqtt_publishes_total')!.get();
    return v.values.some((x) => x.labels.outcome === 'not_stored' && x.value === 1);
  }, 'the held publish to be given up');

  await nats.restart();
  await until(() => gateway.notReady().length === 0, 'readiness');
  const again = await connectDevice(gateway.ports.mqtt, device);
  await again.publishAsync(topic, payload, { qos: 1 }); // what a device does after reconnecting
  await again.publishAsync(topic, payload, { qos: 1 });
  await again.endAsync();
  const nc = await natsClient(nats.url);
  const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter((e) => e.data.seq === 1000);
  await nc.close();
  expect(events).toHaveLength(1);
});
