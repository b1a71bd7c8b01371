import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  AGGREGATE_MEASUREMENT,
  partitionOf,
  TELEMETRY_PARTITIONS,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, type Started, startScript } from '../kit/processes.js';
import { groupSamples, startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

const S = 1_000;
const MIN = 60 * S;
const T0 = Math.floor(Date.now() / MIN) * MIN - 3 * MIN;
const DEVICES = 24;

let nats: NatsServer;
let tsdb: Tsdb;
let nc: NatsConnection;
let gateway: Gateway;
const processors: { run: Started; http: number }[] = [];
const devices: ProvisionedDevice[] = [];

async function startProcessor(name: string) {
  const http = await freePort();
  const run = startScript('processors/main.ts', [], {
    NATS_URL: nats.url,
    INFLUX_URL: tsdb.url,
    HTTP_PORT: String(http),
    BIND_HOST: '127.0.0.1',
    INSTANCE_ID: name,
    LEASE_TTL: '2s',
    CHECKPOINT_INTERVAL: '200ms',
    // No wall-clock closing during the test: windows close on event time only, so which results
    // are written before and after the kill is decided by the script below.
    IDLE_TIMEOUT: '10m',
    LOG_LEVEL: 'warn',
  });
  processors.push({ run, http });
  return { run, http };
}

/** Partitions a processor reports as its own (it checkpoints each one every interval). */
async function ownedBy(http: number): Promise<number[]> {
  const text = await fetch(`http://127.0.0.1:${http}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
  return [...text.matchAll(/^processor_checkpoint_seq\{partition="(\d+)"\}/gm)]
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function send(from: number, to: number, extra?: { offsetS: number; value: number }) {
  await Promise.all(
    devices.map(async (device, k) => {
      // All devices at once, each secret checked by scrypt while two processors start: on a busy
      // CI machine the last CONNACK can take longer than the kit's 5 s.
      const client = await connectDevice(gateway.ports.mqtt, device, { connectTimeout: 30_000 });
      for (let i = from; i < to; i++) {
        const payload = { seq: i, ts: T0 + i * 5 * S, metrics: { temperature: k + i / 4 } };
        await client.publishAsync(telemetryTopic(device.id), JSON.stringify(payload), { qos: 1 });
      }
      if (extra) {
        const payload = { seq: 100, ts: T0 + extra.offsetS * S, metrics: { temperature: extra.value } };
        await client.publishAsync(telemetryTopic(device.id), JSON.stringify(payload), { qos: 1 });
      }
      await client.endAsync();
    }),
  );
}

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  nc = await natsClient(nats.url);
  for (let i = 0; i < DEVICES; i++) devices.push(await provision(nc, `fo-${i}`, 'acme'));
  ({ gateway } = await startGateway(nats.url));
});

afterAll(async () => {
  for (const p of processors) p.run.kill();
  await gateway?.close();
  await nc?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
});

it('shares the partitions between two instances, and after one is SIGKILLed the survivor takes over with exact results', async () => {
  const a = await startProcessor('proc-a');
  const b = await startProcessor('proc-b');
  await until(async () => {
    const [pa, pb] = await Promise.all([ownedBy(a.http), ownedBy(b.http)]);
    return pa.length === TELEMETRY_PARTITIONS / 2 && pb.length === TELEMETRY_PARTITIONS / 2;
  }, 'an even split');
  const [pa, pb] = await Promise.all([ownedBy(a.http), ownedBy(b.http)]);
  expect([...pa, ...pb].sort((x, y) => x - y)).toEqual(
    Array.from({ length: TELEMETRY_PARTITIONS }, (_, p) => p),
  );
  expect(devices.some((d) => pa.includes(partitionOf('acme', d.id)))).toBe(true);

  // Readings 0..7 (0 s to 35 s): the first three 10 s windows are written; the minute stays open.
  await send(0, 8);
  await until(async () => {
    const counts = await tsdb.readSamples({
      measurement: AGGREGATE_MEASUREMENT,
      field: 'count',
      tags: { window: '10s' },
    });
    return counts.length >= DEVICES * 3;
  }, '10 s windows before the kill');

  a.run.kill('SIGKILL');
  await a.run.finished;
  await until(
    async () => (await ownedBy(b.http)).length === TELEMETRY_PARTITIONS,
    'the survivor to own everything',
    15_000,
  );

  // Readings 8..11 (40 s to 55 s), then one at 66 s: the watermark passes the minute's end.
  await send(8, 12, { offsetS: 66, value: 0 });
  const fields = ['count', 'sum', 'min', 'max', 'mean'];
  const minute = await tsdb.waitForSamples(
    { measurement: AGGREGATE_MEASUREMENT, field: fields, tags: { window: '1m' } },
    (s) => s.filter((x) => x.timestamp === T0).length >= DEVICES * fields.length,
    30_000,
  );
  await tsdb.settle({ at: [T0] });
  const all = await tsdb.readSamples({ measurement: AGGREGATE_MEASUREMENT, field: fields });
  for (const [k, device] of devices.entries()) {
    const values = Array.from({ length: 12 }, (_, i) => k + i / 4);
    const sum = values.reduce((x, y) => x + y, 0);
    const expected = { count: 12, sum, min: k, max: k + 11 / 4, mean: sum / 12 };
    const mine = all.filter(
      (s) => s.tags.device === device.id && s.tags.window === '1m' && s.timestamp === T0,
    );
    // Written once, after the kill, with every reading exactly once.
    expect(Object.fromEntries(mine.map((s) => [s.field, s.value]))).toEqual(expected);
    expect(mine).toHaveLength(fields.length);
  }
  // 10 s windows written before the kill may be written again from the replay: always the same values.
  const tenSeconds = all.filter((s) => s.tags.window === '10s');
  for (const samples of groupSamples(tenSeconds).values()) {
    const byTime = new Map<number, Set<number>>();
    for (const s of samples) byTime.set(s.timestamp, (byTime.get(s.timestamp) ?? new Set()).add(s.value));
    for (const distinct of byTime.values()) expect(distinct.size).toBe(1);
  }
  expect(minute.length).toBeGreaterThan(0);
});
