import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  DEADLETTER_STREAM,
  type DeadLetter,
  TELEMETRY_STREAM,
  telemetrySubject,
  telemetryTopic,
} from '../../contract/index.js';
import {
  REJECTION_REASONS,
  type RejectionReason,
  SPARKPLUG_REJECTION_REASONS,
  type SparkplugRejectionReason,
} from '../../contract/rejections.js';
import { DEFAULT_DEADLETTER_MAX_PAYLOAD_BYTES } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { closedByBroker, connectDevice, mosquittoPub } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream, waitForStream } from '../kit/streams.js';

const MAX_PAYLOAD_BYTES = 4096;
const MAX_PACKET_BYTES = 16_384;
const DEVICE_MAX_METRICS = 20;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
const devices: Record<string, ProvisionedDevice> = {};
const clients: MqttClient[] = [];

async function device(name: string): Promise<MqttClient> {
  const client = await connectDevice(gateway.ports.mqtt, devices[name]!);
  clients.push(client);
  return client;
}

const eventsOf = async (id: string, count: number) =>
  (
    await waitForStream<CanonicalEvent>(
      nc,
      TELEMETRY_STREAM,
      (m) => m.filter((e) => e.data.deviceId === id).length >= count,
    )
  ).filter((e) => e.data.deviceId === id);

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  const labelsByDevice: Record<string, Record<string, string>> = {
    thermo: { type: 'thermometer', site: 'lab' },
    mosq: {},
    bad: {},
    dedup: {},
    qos: {},
    big: {},
    other: {},
  };
  for (const [name, labels] of Object.entries(labelsByDevice)) {
    devices[name] = await provision(nc, `${name}-1`, 'acme', labels);
  }
  ({ gateway } = await startGateway(nats.url, {
    MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD_BYTES),
    MAX_PACKET_BYTES: String(MAX_PACKET_BYTES),
    DEVICE_MAX_METRICS: String(DEVICE_MAX_METRICS),
  }));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('valid readings become canonical events', () => {
  it('v1, v2 and a batch, with units converted and registry labels attached', async () => {
    const client = await device('thermo');
    const topic = telemetryTopic('thermo-1');
    const ts = Date.now() - 1000;
    await client.publishAsync(
      topic,
      JSON.stringify({ ts, seq: 1, metrics: { temperature: 21.5, humidity: 40 } }),
      { qos: 1 },
    );
    await client.publishAsync(
      topic,
      JSON.stringify({
        v: 2,
        ts: new Date(ts + 1).toISOString(),
        seq: 2,
        metrics: { temperature: { value: 70.1, unit: 'degF' }, pressure: { value: 101.3, unit: 'kPa' } },
      }),
      { qos: 1 },
    );
    await client.publishAsync(
      topic,
      JSON.stringify([
        { ts: ts + 2, seq: 3, metrics: { temperature: 22 } },
        { v: 2, ts: ts + 3, seq: 4, metrics: { temperature: { value: 295.15, unit: 'K' } } },
      ]),
      { qos: 1 },
    );
    // The PUBACKs above arrived, so every event is already stored: read without waiting.
    const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.data.deviceId === 'thermo-1',
    );
    expect(events.map((e) => e.data.seq)).toEqual([1, 2, 3, 4]);
    for (const e of events) {
      expect(e.subject).toBe(telemetrySubject('acme', 'thermo-1'));
      expect(e.data).toMatchObject({
        tenant: 'acme',
        deviceId: 'thermo-1',
        labels: { type: 'thermometer', site: 'lab' },
      });
    }
    expect(events[0]!.data).toMatchObject({
      ts: new Date(ts).toISOString(),
      schemaVersion: 1,
      metrics: { temperature: { value: 21.5, unit: 'degC' }, humidity: { value: 40, unit: '%' } },
    });
    expect(events[1]!.data.schemaVersion).toBe(2);
    expect(events[1]!.data.metrics.temperature!.value).toBeCloseTo(21.166_666_7, 6);
    expect(events[1]!.data.metrics.temperature!.originalUnit).toBe('degF');
    expect(events[1]!.data.metrics.pressure).toEqual({ value: 1013, unit: 'hPa', originalUnit: 'kPa' });
    expect(events[3]!.data.metrics.temperature).toEqual({ value: 22, unit: 'degC', originalUnit: 'K' });
    expect(events[0]!.msgId).toBe(`acme.thermo-1.1.${ts}`);
  });

  it('from mosquitto_pub, a third-party client', async () => {
    await mosquittoPub(
      gateway.ports.mqtt,
      devices.mosq!,
      telemetryTopic('mosq-1'),
      '{"metrics":{"temperature":19.25}}',
    );
    const [event] = await eventsOf('mosq-1', 1);
    expect(event!.data.metrics).toEqual({ temperature: { value: 19.25, unit: 'degC' } });
  });

  it('at QoS 2 and QoS 0', async () => {
    const client = await device('qos');
    await client.publishAsync(
      telemetryTopic('qos-1'),
      JSON.stringify({ seq: 1, ts: Date.now(), metrics: { a: 1 } }),
      { qos: 2 },
    );
    expect(
      (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter((e) => e.data.deviceId === 'qos-1'),
    ).toHaveLength(1);
    await client.publishAsync(telemetryTopic('qos-1'), JSON.stringify({ seq: 2, metrics: { a: 2 } }), {
      qos: 0,
    });
    const events = await eventsOf('qos-1', 2);
    expect(events.map((e) => e.data.metrics.a!.value)).toEqual([1, 2]);
  });
});

describe('deduplication', () => {
  it('stores a retransmitted reading once, and a rebooted device’s new seq 0 again', async () => {
    const client = await device('dedup');
    const topic = telemetryTopic('dedup-1');
    const ts = Date.now() - 5000;
    const reading = JSON.stringify({ ts, seq: 0, metrics: { temperature: 20 } });
    await client.publishAsync(topic, reading, { qos: 1 });
    // A device that lost its PUBACK reconnects and sends the same reading again.
    await client.publishAsync(topic, reading, { qos: 1 });
    await client.publishAsync(topic, reading, { qos: 1 });
    // Rebooted: seq starts over at 0, but it is a new reading with its own ts.
    await client.publishAsync(
      topic,
      JSON.stringify({ ts: ts + 4000, seq: 0, metrics: { temperature: 20 } }),
      { qos: 1 },
    );
    const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.data.deviceId === 'dedup-1',
    );
    expect(events.map((e) => e.data.ts)).toEqual([
      new Date(ts).toISOString(),
      new Date(ts + 4000).toISOString(),
    ]);
    const duplicates = (
      await gateway.metrics.registry.getSingleMetric('gateway_events_total')!.get()
    ).values.find((v) => v.labels.outcome === 'duplicate');
    expect(duplicates?.value).toBeGreaterThanOrEqual(2);
  });
});

/** Reasons only a gateway device's publish for another device can have: test/integration/gateway-devices.test.ts. */
const GATEWAY_DEVICE_REASONS: readonly RejectionReason[] = ['CHILD_DENIED', 'CHILD_LIMIT'];

describe('every rejection reason lands in DEADLETTER', () => {
  const now = Date.now();
  // A Sparkplug edge node's reasons are tested in test/gateway/sparkplug/edge-session.test.ts, a
  // gateway device's in test/integration/gateway-devices.test.ts.
  type JsonReason = Exclude<RejectionReason, SparkplugRejectionReason | 'CHILD_DENIED' | 'CHILD_LIMIT'>;
  const jsonReasons = Object.keys(REJECTION_REASONS).filter(
    (r) =>
      !Object.hasOwn(SPARKPLUG_REJECTION_REASONS, r) &&
      !GATEWAY_DEVICE_REASONS.includes(r as RejectionReason),
  );
  const cases: Record<JsonReason, { payload: Buffer | string; topic?: string }> = {
    PAYLOAD_TOO_LARGE: { payload: JSON.stringify({ metrics: { a: 1 }, pad: 'x'.repeat(MAX_PAYLOAD_BYTES) }) },
    PAYLOAD_NOT_UTF8: { payload: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
    PAYLOAD_NOT_JSON: { payload: '{"metrics": {' },
    // A CBOR map of one pair whose value never comes.
    PAYLOAD_NOT_CBOR: { payload: Buffer.from([0xa1, 0x67]), topic: telemetryTopic('bad-1', 'cbor') },
    BATCH_EMPTY: { payload: '[]' },
    BATCH_TOO_LARGE: { payload: JSON.stringify(Array.from({ length: 1_001 }, () => ({}))) },
    VERSION_UNSUPPORTED: { payload: JSON.stringify({ v: 3, metrics: { a: 1 } }) },
    SCHEMA_INVALID: { payload: JSON.stringify({ metrics: 'hot' }) },
    METRICS_EMPTY: { payload: JSON.stringify({ metrics: {} }) },
    TOO_MANY_METRICS: {
      payload: JSON.stringify({
        metrics: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`m${i}`, i])),
      }),
    },
    METRIC_NAME_INVALID: { payload: '{"metrics":{"__proto__":{"polluted":true}}}' },
    VALUE_INVALID: { payload: JSON.stringify({ metrics: { a: 'Infinity' } }) },
    TS_INVALID: { payload: JSON.stringify({ ts: 'yesterday', metrics: { a: 1 } }) },
    TS_IN_FUTURE: { payload: JSON.stringify({ ts: now + 3_600_000, metrics: { a: 1 } }) },
    TS_TOO_OLD: { payload: JSON.stringify({ ts: 1_700_000, metrics: { a: 1 } }) },
    SEQ_INVALID: { payload: JSON.stringify({ seq: -3, metrics: { a: 1 } }) },
    UNIT_UNKNOWN: { payload: JSON.stringify({ v: 2, metrics: { a: { value: 1, unit: 'parsec' } } }) },
    UNIT_MISMATCH: { payload: JSON.stringify({ v: 2, metrics: { temperature: { value: 1, unit: 'psi' } } }) },
    METRIC_LIMIT: {
      payload: JSON.stringify({
        metrics: Object.fromEntries(Array.from({ length: DEVICE_MAX_METRICS + 1 }, (_, i) => [`n${i}`, i])),
      }),
    },
    TOPIC_UNKNOWN: { payload: '{"metrics":{"a":1}}', topic: 'devices/bad-1/telemetry/extra' },
  };

  it('with its reason code, device, topic and original payload; nothing reaches TELEMETRY', async () => {
    const client = await device('bad');
    for (const { payload, topic } of Object.values(cases)) {
      await client.publishAsync(topic ?? telemetryTopic('bad-1'), payload, { qos: 1 });
    }
    const letters = (await readStream<DeadLetter>(nc, DEADLETTER_STREAM)).filter(
      (m) => m.data.deviceId === 'bad-1',
    );
    expect(letters.map((l) => l.data.reason).sort()).toEqual(jsonReasons.sort());
    for (const letter of letters) {
      const sent = cases[letter.data.reason as JsonReason];
      expect(letter.subject).toBe(`deadletter.acme.${letter.data.reason}`);
      expect(letter.data).toMatchObject({
        tenant: 'acme',
        clientId: 'bad-1',
        topic: sent.topic ?? telemetryTopic('bad-1'),
      });
      expect(letter.data.detail.length).toBeGreaterThan(0);
      const original = Buffer.isBuffer(sent.payload) ? sent.payload : Buffer.from(sent.payload);
      // The payload whole, or its first DEADLETTER_MAX_PAYLOAD_BYTES (the one over MAX_PAYLOAD_BYTES).
      const kept = Buffer.from(letter.data.payload, letter.data.payloadEncoding);
      expect(kept).toEqual(original.subarray(0, DEFAULT_DEADLETTER_MAX_PAYLOAD_BYTES));
      expect(letter.data.truncated).toBe(original.byteLength > DEFAULT_DEADLETTER_MAX_PAYLOAD_BYTES);
      expect(letter.data.payloadBytes).toBe(original.byteLength);
    }
    expect(letters.find((l) => l.data.reason === 'PAYLOAD_NOT_UTF8')!.data.payloadEncoding).toBe('base64');
    expect(
      (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter((e) => e.data.deviceId === 'bad-1'),
    ).toEqual([]);
  });

  it('a batch with bad readings stores the good ones and dead-letters the bad ones in one letter', async () => {
    const client = await device('bad');
    const ts = Date.now();
    const batch = JSON.stringify([
      { ts, seq: 100, metrics: { a: 1 } },
      { ts, seq: 101, metrics: { a: true, 'b c': 2 } },
      { ts, seq: 102, metrics: { a: 3 } },
      { ts: 'soon', seq: 103, metrics: { a: 4 } },
    ]);
    await client.publishAsync(telemetryTopic('bad-1'), batch, { qos: 1 });
    const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.data.deviceId === 'bad-1',
    );
    expect(events.map((e) => e.data.seq)).toEqual([100, 102]);
    const letters = (await readStream<DeadLetter>(nc, DEADLETTER_STREAM)).filter(
      (l) => l.data.readings !== undefined,
    );
    expect(letters).toHaveLength(1);
    expect(letters[0]!.subject).toBe('deadletter.acme.METRIC_NAME_INVALID');
    expect(letters[0]!.data).toMatchObject({
      reason: 'METRIC_NAME_INVALID',
      deviceId: 'bad-1',
      index: 1,
      readings: 4,
      rejected: 2,
      rejections: [
        { index: 1, reason: 'METRIC_NAME_INVALID', detail: expect.any(String) },
        { index: 3, reason: 'TS_INVALID', detail: expect.any(String) },
      ],
      payload: batch,
    });
    expect(letters[0]!.data.detail).toMatch(/^2 of 4 readings rejected; the first: /);
  });
});

describe('limits', () => {
  it('closes a connection that announces a frame over MAX_PACKET_BYTES, and keeps serving others', async () => {
    const big = await device('big');
    const closed = closedByBroker(big);
    big.publish(telemetryTopic('big-1'), Buffer.alloc(MAX_PACKET_BYTES + 10, 0x20), { qos: 1 });
    await closed;
    const other = await device('other');
    await other.publishAsync(telemetryTopic('other-1'), JSON.stringify({ metrics: { a: 1 } }), { qos: 1 });
    expect(await eventsOf('other-1', 1)).toHaveLength(1);
  });
});
