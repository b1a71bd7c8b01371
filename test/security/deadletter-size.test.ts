import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEADLETTER_STREAM,
  DEADLETTER_TOPIC_MAX_BYTES,
  DeadLetter,
  PRESENCE_STREAM,
  PresenceEvent,
  statusTopic,
  telemetryTopic,
} from '../../contract/index.js';
import type { GatewayConfig } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { RawSession } from '../kit/raw-mqtt.js';
import { readStream } from '../kit/streams.js';

/**
 * What one rejected message or one status payload becomes in JetStream (found: a 64 KB topic of
 * U+0001 and a 64 KiB payload of 0x01 bytes stored 788 KB in DEADLETTER, JSON writing each control
 * character as `\u0001`; the same payload on the status topic stored 393 KB in PRESENCE). Each is
 * now bounded by construction: the kept payload by its setting, stored as whichever of UTF-8 text and
 * base64 is shorter in JSON (at most 4/3 of it), the topic and details by their JSON size.
 */

let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let gateway: Gateway;
let config: GatewayConfig;
let device: ProvisionedDevice;
let session: RawSession;
let nextId = 1;

/** Fields of a letter or presence event besides its payload: ids, reason, detail, topic, times. */
const FIXED_BYTES = 1_500;
const base64Bytes = (n: number) => 4 * Math.ceil(n / 3);

const limitCount = async (limit: string) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

/** The last message the device caused on a stream, as stored: its JSON and its size in bytes. */
async function lastStored<T>(stream: string): Promise<{ data: T; bytes: number }> {
  const messages = (await readStream<{ deviceId: string }>(nc, stream)).filter(
    (m) => m.data.deviceId === device.id,
  );
  const seq = messages.at(-1)!.seq;
  const stored = await jsm.streams.getMessage(stream, { seq });
  return { data: stored!.json<T>(), bytes: stored!.data.byteLength };
}

const publish = (topic: string, payload: string | Buffer) => session.publish(topic, payload, nextId++);

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  jsm = await jetstreamManager(nc);
  device = await provision(nc, 'bloat-1', 'acme');
  // The byte budget off: it slows a device down, it does not bound what one message becomes.
  ({ gateway, config } = await startGateway(nats.url, { DEVICE_MAX_BYTES_PER_SEC: '0' }));
  session = await RawSession.open(gateway.ports.mqtt, {
    clientId: device.id,
    username: device.id,
    password: device.secret,
  });
});

afterAll(async () => {
  await session?.drop();
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('a dead letter', () => {
  it('runs with the defaults this file assumes', () => {
    expect(config.DEADLETTER_MAX_PAYLOAD_BYTES).toBe(4_096);
    expect(config.STATUS_MAX_PAYLOAD_BYTES).toBe(4_096);
  });

  it('of a 64 KB topic of U+0001 and 64 KiB of 0x01 bytes is a few KB, not 788 KB', async () => {
    const root = `devices/${device.id}/`;
    const topic = root + '\u0001'.repeat(65_000);
    const payload = Buffer.alloc(65_536, 0x01);
    const before = await limitCount('DEADLETTER_MAX_PAYLOAD_BYTES');
    await publish(topic, payload);

    const { data, bytes } = await lastStored<DeadLetter>(DEADLETTER_STREAM);
    expect(DeadLetter.safeParse(data).success).toBe(true);
    expect(bytes).toBeLessThanOrEqual(base64Bytes(config.DEADLETTER_MAX_PAYLOAD_BYTES) + FIXED_BYTES);
    expect(data).toMatchObject({
      reason: 'TOPIC_UNKNOWN',
      payloadEncoding: 'base64',
      payloadBytes: 65_536,
      truncated: true,
      topicBytes: Buffer.byteLength(topic),
    });
    // The kept part is exact: the first bytes of the payload and the first characters of the topic.
    expect(Buffer.from(data.payload, 'base64')).toEqual(
      payload.subarray(0, config.DEADLETTER_MAX_PAYLOAD_BYTES),
    );
    expect(topic.startsWith(data.topic)).toBe(true);
    expect(data.topic.startsWith(root)).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(data.topic))).toBeLessThanOrEqual(DEADLETTER_TOPIC_MAX_BYTES + 2);
    expect(Buffer.byteLength(JSON.stringify(data.detail))).toBeLessThanOrEqual(512 + 2);
    expect(await limitCount('DEADLETTER_MAX_PAYLOAD_BYTES')).toBe(before + 1);
  });

  // Payloads up to DEADLETTER_MAX_PAYLOAD_BYTES, kept whole: stored at most 4/3 of their size (base64)
  // plus the fixed fields, whatever JSON would have made of them as text.
  const hostile: { name: string; payload: Buffer; encoding: 'utf8' | 'base64' }[] = [
    { name: 'control characters', payload: Buffer.alloc(4_000, 0x01), encoding: 'base64' },
    { name: 'double quotes', payload: Buffer.alloc(4_000, 0x22), encoding: 'base64' },
    { name: 'backslashes', payload: Buffer.alloc(4_000, 0x5c), encoding: 'base64' },
    { name: 'newlines', payload: Buffer.alloc(4_000, 0x0a), encoding: 'base64' },
    { name: 'bytes that are not UTF-8', payload: Buffer.alloc(4_000, 0xff), encoding: 'base64' },
    {
      name: 'readable JSON with a bad value',
      payload: Buffer.from(
        JSON.stringify({ ts: Date.now(), metrics: { temperature: 'hot', rh: 'x'.repeat(3_000) } }),
      ),
      encoding: 'utf8',
    },
    {
      name: 'JSON whose text is four-byte characters',
      payload: Buffer.from(JSON.stringify({ metrics: { t: '🌡'.repeat(900) } })),
      encoding: 'utf8',
    },
  ];
  it.each(hostile)(
    'of $name is kept whole, as $encoding, within 4/3 of its size',
    async ({ payload, encoding }) => {
      await publish(telemetryTopic(device.id), payload);
      const { data, bytes } = await lastStored<DeadLetter>(DEADLETTER_STREAM);
      expect(DeadLetter.safeParse(data).success).toBe(true);
      expect(data.payloadEncoding).toBe(encoding);
      expect(data.truncated).toBe(false);
      expect(Buffer.from(data.payload, data.payloadEncoding)).toEqual(payload);
      expect(bytes).toBeLessThanOrEqual(base64Bytes(payload.byteLength) + FIXED_BYTES);
    },
  );

  it('keeps a UTF-8 payload cut at the setting readable: never cut inside a character', async () => {
    // 3-byte characters from an odd offset: a cut at exactly 4,096 bytes would split one.
    const payload = Buffer.from(`{"metrics":{"t":"${'€'.repeat(3_000)}"}}`);
    await publish(telemetryTopic(device.id), payload);
    const { data } = await lastStored<DeadLetter>(DEADLETTER_STREAM);
    expect(data).toMatchObject({
      payloadEncoding: 'utf8',
      truncated: true,
      payloadBytes: payload.byteLength,
    });
    const kept = Buffer.from(data.payload, 'utf8');
    expect(kept.byteLength).toBeLessThanOrEqual(config.DEADLETTER_MAX_PAYLOAD_BYTES);
    expect(kept.byteLength).toBeGreaterThan(config.DEADLETTER_MAX_PAYLOAD_BYTES - 3);
    expect(payload.subarray(0, kept.byteLength)).toEqual(kept);
  });

  it('quotes device input in its detail within a bounded size, control characters included', async () => {
    // V8 quotes the raw text of a payload that is not JSON in its message; a `v` is quoted as JSON.
    for (const payload of [
      '\u0001'.repeat(3_000),
      JSON.stringify({ v: '\u0001'.repeat(3_000), metrics: { a: 1 } }),
    ]) {
      await publish(telemetryTopic(device.id), payload);
      const { data } = await lastStored<DeadLetter>(DEADLETTER_STREAM);
      expect(data.detail.length).toBeGreaterThan(0);
      expect(Buffer.byteLength(JSON.stringify(data.detail))).toBeLessThanOrEqual(512 + 2);
    }
  });

  it('of a batch lists its rejected readings in no more room than the payload it kept', async () => {
    // 1,000 readings that are not objects, 2 bytes each: listed in full, 100 of them took ~8 KB.
    const payload = `[${Array(1_000).fill('1').join(',')}]`;
    await publish(telemetryTopic(device.id), payload);
    const { data, bytes } = await lastStored<DeadLetter>(DEADLETTER_STREAM);
    expect(data).toMatchObject({ reason: 'SCHEMA_INVALID', readings: 1_000, rejected: 1_000, index: 0 });
    expect(data.rejections!.length).toBeGreaterThan(0);
    expect(data.rejections![0]).toMatchObject({ index: 0, reason: 'SCHEMA_INVALID' });
    expect(Buffer.byteLength(JSON.stringify(data.rejections))).toBeLessThanOrEqual(payload.length);
    expect(bytes).toBeLessThanOrEqual(base64Bytes(payload.length) + payload.length + FIXED_BYTES);
  });
});

describe('a status payload in a presence event', () => {
  it('of 64 KiB of 0x01 bytes is a few KB, not 393 KB', async () => {
    const payload = Buffer.alloc(65_536, 0x01);
    const before = await limitCount('STATUS_MAX_PAYLOAD_BYTES');
    await publish(statusTopic(device.id), payload);
    const { data, bytes } = await lastStored<PresenceEvent>(PRESENCE_STREAM);
    expect(PresenceEvent.safeParse(data).success).toBe(true);
    expect(bytes).toBeLessThanOrEqual(base64Bytes(config.STATUS_MAX_PAYLOAD_BYTES) + FIXED_BYTES);
    expect(data).toMatchObject({
      type: 'status',
      statusEncoding: 'base64',
      statusBytes: 65_536,
      statusTruncated: true,
    });
    expect(Buffer.from(data.status as string, 'base64')).toEqual(
      payload.subarray(0, config.STATUS_MAX_PAYLOAD_BYTES),
    );
    expect(await limitCount('STATUS_MAX_PAYLOAD_BYTES')).toBe(before + 1);
  });

  it('is kept as JSON when it is JSON, and as text when it is text', async () => {
    await publish(statusTopic(device.id), '{"fw":"1.2.3","rssi":-70,"online":true}');
    expect((await lastStored<PresenceEvent>(PRESENCE_STREAM)).data).toMatchObject({
      status: { fw: '1.2.3', rssi: -70, online: true },
      statusEncoding: 'json',
      statusTruncated: false,
    });
    await publish(statusTopic(device.id), 'offline');
    expect((await lastStored<PresenceEvent>(PRESENCE_STREAM)).data).toMatchObject({
      status: 'offline',
      statusEncoding: 'utf8',
    });
  });

  it('is never larger as JSON than what the device sent: 1e20 written out is not kept as a number', async () => {
    // JSON.stringify writes 1e20 as 100000000000000000000: 5 bytes become 21.
    const payload = `[${Array(800).fill('1e20').join(',')}]`;
    await publish(statusTopic(device.id), payload);
    const { data, bytes } = await lastStored<PresenceEvent>(PRESENCE_STREAM);
    expect(bytes).toBeLessThanOrEqual(base64Bytes(payload.length) + FIXED_BYTES);
    expect(data.statusEncoding).not.toBe('json');
  });
});
