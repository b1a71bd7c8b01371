import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import {
  AGGREGATE_MEASUREMENT,
  ALERTS_MEASUREMENT,
  alertsSubject,
  DEVICE_STATUS_MEASUREMENT,
  FLEET_MEASUREMENT,
  PRESENCE_STATE_BUCKET,
  type PresenceState,
  presenceStateKey,
  TELEMETRY_MEASUREMENT,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { type ProcessorConfig, ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessor, type Processor } from '../../processors/processor.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { findDuplicates, startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

const S = 1_000;
const MIN = 60 * S;
/** Two whole minutes ago: inside TS_MAX_AGE, and every window of it is in the past. */
const T0 = Math.floor(Date.now() / MIN) * MIN - 2 * MIN;

let nats: NatsServer;
let tsdb: Tsdb;
let nc: NatsConnection;
let gateway: Gateway;
let processor: Processor;
let processorConfig: ProcessorConfig;
let rulesDir: string;
const devices: ProvisionedDevice[] = [];

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  nc = await natsClient(nats.url);
  for (const id of ['pipe-a', 'pipe-b', 'pipe-c'])
    devices.push(await provision(nc, id, 'acme', { type: 'thermometer' }));
  ({ gateway } = await startGateway(nats.url));
  rulesDir = await mkdtemp(join(tmpdir(), 'rules-'));
  const rulesFile = join(rulesDir, 'rules.yaml');
  await writeFile(
    rulesFile,
    [
      'rules:',
      '  - { name: boiler-hot, type: threshold, severity: critical, metric: boiler, op: ">", value: 80, clear: 75 }',
    ].join('\n'),
  );
  processorConfig = loadConfig(ProcessorConfigSchema, {
    ALERT_RULES_FILE: rulesFile,
    NATS_URL: nats.url,
    INFLUX_URL: tsdb.url,
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    WINDOWS: '10s,1m',
    ALLOWED_LATENESS: '5s',
    IDLE_TIMEOUT: '1s', // the scripted fleet goes quiet: let its windows close soon after
    CHECKPOINT_INTERVAL: '200ms',
    LEASE_TTL: '3s',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  });
  processor = await createProcessor(processorConfig, createLogger('processors', processorConfig.LOG_LEVEL));
});

afterAll(async () => {
  await processor?.close();
  await gateway?.close();
  await nc?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
  if (rulesDir) await rm(rulesDir, { recursive: true, force: true });
});

describe('gateway → JetStream → processors → TSDB', () => {
  it('writes raw readings and exact 10 s and 1 m aggregates for a scripted fleet', async () => {
    // Device k sends 12 readings, one every 5 s across the first minute, value 10k + i (and a
    // retransmission of one of them, which the gateway deduplicates).
    for (const [k, device] of devices.entries()) {
      const client = await connectDevice(gateway.ports.mqtt, device);
      for (let i = 0; i < 12; i++) {
        const reading = JSON.stringify({ seq: i, ts: T0 + i * 5 * S, metrics: { temperature: 10 * k + i } });
        await client.publishAsync(telemetryTopic(device.id), reading, { qos: 1 });
        if (i === 3) await client.publishAsync(telemetryTopic(device.id), reading, { qos: 1 });
      }
      await client.endAsync();
    }
    for (const [k, device] of devices.entries()) {
      const tags = { device: device.id, metric: 'temperature' };
      const minute = await tsdb.waitForSamples(
        {
          measurement: AGGREGATE_MEASUREMENT,
          field: ['count', 'sum', 'min', 'max', 'mean'],
          tags: { ...tags, window: '1m' },
        },
        (s) => s.length >= 5,
        20_000,
      );
      const byField = Object.fromEntries(minute.map((s) => [s.field, s.value]));
      const values = Array.from({ length: 12 }, (_, i) => 10 * k + i);
      const sum = values.reduce((a, b) => a + b, 0);
      expect(byField).toEqual({ count: 12, sum, min: 10 * k, max: 10 * k + 11, mean: sum / 12 });
      expect(minute.every((s) => s.timestamp === T0)).toBe(true);

      const tenSeconds = await tsdb.waitForSamples(
        { measurement: AGGREGATE_MEASUREMENT, field: 'count', tags: { ...tags, window: '10s' } },
        (s) => s.length >= 6,
        20_000,
      );
      expect(tenSeconds.map((s) => [s.timestamp - T0, s.value])).toEqual(
        [0, 10, 20, 30, 40, 50].map((start) => [start * S, 2]),
      );
    }
    await tsdb.settle({ at: [T0] });
    const raw = await tsdb.readSamples({ measurement: TELEMETRY_MEASUREMENT, field: 'temperature' });
    expect(raw.filter((s) => s.tags.device === 'pipe-a')).toHaveLength(12);
    expect(raw[0]!.tags).toMatchObject({ tenant: 'acme', type: 'thermometer' });
    const aggregates = await tsdb.readSamples({ measurement: AGGREGATE_MEASUREMENT, field: 'count' });
    expect(findDuplicates(aggregates)).toEqual([]); // in-order data: each window written once
    expect(processor.partitions()).toHaveLength(16);

    // Fleet rollup of the same minute, over all devices and per type. The row is rewritten as each
    // device's window arrives; VictoriaMetrics keeps every write, so each field's values at T0 are
    // checked together: the complete row (3 devices) is there, every partial row is consistent (12
    // readings per device), and nothing else was written.
    const all = Array.from({ length: 36 }, (_, j) => 10 * Math.floor(j / 12) + (j % 12));
    const total = all.reduce((a, b) => a + b, 0);
    for (const group of [
      { group: 'all', group_value: 'all' },
      { group: 'type', group_value: 'thermometer' },
    ]) {
      const selector = {
        measurement: FLEET_MEASUREMENT,
        field: ['devices', 'count', 'mean', 'min', 'max'],
        tags: { tenant: 'acme', metric: 'temperature', window: '1m', ...group },
      };
      await tsdb.waitForSamples(
        selector,
        (s) => s.some((x) => x.field === 'devices' && x.timestamp === T0 && x.value === 3),
        20_000,
      );
      await tsdb.settle({ at: [T0] });
      const fleet = (await tsdb.readSamples(selector)).filter((x) => x.timestamp === T0);
      const values = (field: string) =>
        fleet
          .filter((x) => x.field === field)
          .map((x) => x.value)
          .sort((a, b) => a - b);
      expect(values('devices').at(-1)).toBe(3);
      expect(values('count')).toEqual(values('devices').map((d) => 12 * d));
      expect(values('count').at(-1)).toBe(36);
      expect(values('mean')).toContain(total / 36);
      expect(values('min')[0]).toBe(0);
      expect(values('max').at(-1)).toBe(31);
    }
  });

  it('re-emits a window corrected by a late reading, and counts a reading beyond the lateness', async () => {
    const device = await provision(nc, 'pipe-late', 'acme');
    await new Promise((r) => setTimeout(r, 300)); // the registry change reaches the gateway
    const client = await connectDevice(gateway.ports.mqtt, device);
    const send = (seq: number, offsetS: number, value: number) =>
      client.publishAsync(
        telemetryTopic(device.id),
        JSON.stringify({ seq, ts: T0 + offsetS * S, metrics: { x: value } }),
        {
          qos: 1,
        },
      );
    const metric = async (name: string, labels: Record<string, string> = {}) =>
      (await processor.metrics.registry.getSingleMetric(name)!.get()).values
        .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
        .reduce((n, v) => n + v.value, 0);
    const until = async (check: () => Promise<boolean>) => {
      while (!(await check())) await new Promise((r) => setTimeout(r, 20));
    };
    await send(1, 1, 1);
    // The device's idle clock runs from its last reading: after 3 s of silence [0 s, 10 s) would
    // be final. So wait on the processor, not on the TSDB's visibility delay: first for the window to
    // be handed to the writer, then for the writer to have it accepted. VictoriaMetrics keeps one
    // sample per series and time within one request, so the on-time result and its correction must
    // travel in different requests to be seen as two writes.
    const emittedBefore = await metric('processor_windows_emitted_total', { window: '10s' });
    await send(2, 12, 2); // event time reaches 10 s: [0 s, 10 s) is emitted with count 1
    await until(
      async () => (await metric('processor_windows_emitted_total', { window: '10s' })) > emittedBefore,
    );
    await until(async () => (await metric('processor_tsdb_pending_lines')) === 0);
    await send(3, 8, 3); // 4 s late: inside the 5 s lateness, corrects [0 s, 10 s) to count 2
    await send(4, 20, 4); // watermark 15 s: [0 s, 10 s) is final
    await send(5, 2, 5); // 18 s late: beyond the lateness; raw only
    await client.endAsync();
    const selector = {
      measurement: AGGREGATE_MEASUREMENT,
      field: 'count',
      tags: { device: device.id, window: '10s' },
    };
    await tsdb.waitForSamples(selector, (s) => s.filter((x) => x.timestamp === T0).length >= 2);
    await tsdb.settle({ at: [T0] });
    const first = (await tsdb.readSamples(selector)).filter((x) => x.timestamp === T0);
    // InfluxDB overwrites the same series and time; VictoriaMetrics keeps both writes. Both are
    // checked: the on-time result and the correction, and nothing else.
    expect(first.map((x) => x.value).sort()).toEqual([1, 2]);
    const raw = await tsdb.readSamples({
      measurement: TELEMETRY_MEASUREMENT,
      field: 'x',
      tags: { device: device.id },
    });
    expect(raw.map((s) => s.value).sort()).toEqual([1, 2, 3, 4, 5]);
    const late = (await processor.metrics.registry.getSingleMetric('processor_late_events_total')!.get())
      .values[0]?.value;
    expect(late).toBe(1);
  });
  it('holds while the TSDB is down and loses nothing when it comes back', async () => {
    const device = await provision(nc, 'pipe-outage', 'acme');
    await new Promise((r) => setTimeout(r, 300)); // the registry change reaches the gateway
    const client = await connectDevice(gateway.ports.mqtt, device);
    const base = T0 - 2 * MIN; // a minute of its own, away from the other tests' windows
    const send = (i: number) =>
      client.publishAsync(
        telemetryTopic(device.id),
        JSON.stringify({ seq: i, ts: base + i * S, metrics: { y: i } }),
        {
          qos: 1,
        },
      );
    for (let i = 0; i < 20; i++) await send(i);
    await tsdb.stop();
    for (let i = 20; i < 60; i++) await send(i); // the gateway acknowledges: JetStream holds them
    await send(66); // closes the minute [base, base + 1 m)
    await client.endAsync();
    const retries = async () =>
      (await processor.metrics.registry.getSingleMetric('processor_tsdb_retries_total')!.get()).values[0]
        ?.value ?? 0;
    const before = await retries();
    while ((await retries()) === before) await new Promise((r) => setTimeout(r, 50));
    expect(processor.notReady()).toEqual([]); // retrying, not overloaded by 61 readings
    await tsdb.restart();
    const minute = await tsdb.waitForSamples(
      {
        measurement: AGGREGATE_MEASUREMENT,
        field: ['count', 'sum'],
        tags: { device: device.id, window: '1m' },
      },
      (s) => s.filter((x) => x.timestamp === base).length >= 2,
      30_000,
    );
    expect(
      Object.fromEntries(minute.filter((x) => x.timestamp === base).map((s) => [s.field, s.value])),
    ).toEqual({
      count: 60,
      sum: (59 * 60) / 2,
    });
    await tsdb.settle({ at: [base] });
    const raw = await tsdb.readSamples({
      measurement: TELEMETRY_MEASUREMENT,
      field: 'y',
      tags: { device: device.id },
    });
    expect(raw.map((s) => s.value).sort((a, b) => a - b)).toEqual([
      ...Array.from({ length: 60 }, (_, i) => i),
      66,
    ]);
  });
  it('shuts down within its grace period while the TSDB is down; the next instance writes what was not', async () => {
    const device = await provision(nc, 'pipe-shutdown', 'acme');
    await new Promise((r) => setTimeout(r, 300)); // the registry change reaches the gateway
    const client = await connectDevice(gateway.ports.mqtt, device);
    const base = T0 - 4 * MIN; // a minute of its own
    await tsdb.stop();
    for (let i = 0; i < 30; i++) {
      const reading = { seq: i, ts: base + i * S, metrics: { z: i } };
      await client.publishAsync(telemetryTopic(device.id), JSON.stringify(reading), { qos: 1 });
    }
    await client.publishAsync(
      telemetryTopic(device.id),
      JSON.stringify({ seq: 99, ts: base + 66 * S, metrics: { z: 99 } }),
      { qos: 1 },
    );
    await client.endAsync();
    const retries = async () =>
      (await processor.metrics.registry.getSingleMetric('processor_tsdb_retries_total')!.get()).values[0]
        ?.value ?? 0;
    const before = await retries();
    while ((await retries()) === before) await new Promise((r) => setTimeout(r, 50));
    // Bounded, not timed: before the fix close() waited on the TSDB for ever.
    const closing = Date.now();
    await processor.close();
    expect(Date.now() - closing).toBeLessThan(15_000);
    await tsdb.restart();
    processor = await createProcessor(processorConfig, createLogger('processors', processorConfig.LOG_LEVEL));
    const minute = await tsdb.waitForSamples(
      {
        measurement: AGGREGATE_MEASUREMENT,
        field: ['count', 'sum'],
        tags: { device: device.id, window: '1m' },
      },
      (s) => s.filter((x) => x.timestamp === base).length >= 2,
      30_000,
    );
    expect(
      Object.fromEntries(minute.filter((x) => x.timestamp === base).map((s) => [s.field, s.value])),
    ).toEqual({ count: 30, sum: (29 * 30) / 2 });
    await tsdb.settle({ at: [base] });
    const raw = await tsdb.readSamples({
      measurement: TELEMETRY_MEASUREMENT,
      field: 'z',
      tags: { device: device.id },
    });
    expect(raw.map((s) => s.value).sort((a, b) => a - b)).toEqual([
      ...Array.from({ length: 30 }, (_, i) => i),
      99,
    ]);
  });

  it('writes device presence: online on connect, offline with the reason on disconnect', async () => {
    const device = await provision(nc, 'pipe-presence', 'acme');
    await new Promise((r) => setTimeout(r, 300)); // the registry change reaches the gateway
    const client = await connectDevice(gateway.ports.mqtt, device);
    const selector = {
      measurement: DEVICE_STATUS_MEASUREMENT,
      field: 'online',
      tags: { tenant: 'acme', device: device.id },
    };
    await tsdb.waitForSamples(selector, (s) => s.some((x) => x.value === 1), 20_000);
    await client.endAsync();
    const status = await tsdb.waitForSamples(selector, (s) => s.length >= 2, 20_000);
    expect(status.sort((a, b) => a.timestamp - b.timestamp).map((s) => s.value)).toEqual([1, 0]);
    const kv = await new Kvm(nc).open(PRESENCE_STATE_BUCKET);
    const state = (await kv.get(presenceStateKey('acme', device.id)))?.json<PresenceState>();
    expect(state).toMatchObject({ online: false, reason: 'disconnected', connections: [] });
  });

  it('fires and resolves an alert: written to the alerts measurement and published on NATS', async () => {
    const device = await provision(nc, 'pipe-boiler', 'acme');
    await new Promise((r) => setTimeout(r, 300)); // the registry change reaches the gateway
    const received: { state: string; value: number }[] = [];
    const sub = nc.subscribe(alertsSubject('acme', device.id), {
      callback: (_err, msg) => {
        received.push(msg.json<{ state: string; value: number }>());
      },
    });
    const client = await connectDevice(gateway.ports.mqtt, device);
    const base = T0 - MIN;
    for (const [i, value] of [70, 85, 90, 78, 74, 86].entries()) {
      const reading = { seq: i, ts: base + i * S, metrics: { boiler: value } };
      await client.publishAsync(telemetryTopic(device.id), JSON.stringify(reading), { qos: 1 });
    }
    await client.endAsync();
    const states = await tsdb.waitForSamples(
      { measurement: ALERTS_MEASUREMENT, field: 'value', tags: { device: device.id, rule: 'boiler-hot' } },
      (x) => x.length >= 3,
      15_000,
    );
    // 85 fires; 90 and 78 stay firing (78 is above the clear level 75); 74 resolves; 86 fires again.
    expect(states.map((x) => [x.timestamp - base, x.value])).toEqual([
      [1 * S, 85],
      [4 * S, 74],
      [5 * S, 86],
    ]);
    expect(states[0]!.tags).toMatchObject({ tenant: 'acme', severity: 'critical' });
    expect(received.map((r) => [r.state, r.value])).toEqual([
      ['firing', 85],
      ['resolved', 74],
      ['firing', 86],
    ]);
    sub.unsubscribe();
  });
});
