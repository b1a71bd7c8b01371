import { DiscardPolicy, type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEADLETTER_STREAM,
  PRESENCE_STREAM,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { RawSession } from '../kit/raw-mqtt.js';
import { readStream } from '../kit/streams.js';

/**
 * A JetStream store of 48 MB standing in for a disk. Found: one device publishing to an unknown topic
 * filled it through DEADLETTER in seconds, after which no device got a PUBACK and /readyz said 200.
 * Now DEADLETTER and PRESENCE discard their oldest messages at their byte limits; when the store is
 * full anyway (TELEMETRY, which never discards unprocessed data, or anything else), nothing is
 * acknowledged, /readyz says why, and both recover by themselves once there is room again.
 */

const MB = 1024 * 1024;
const STORE_MB = 48;
const DEADLETTER_MAX_BYTES = 2 * MB;

let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let gateway: Gateway;
let hostile: ProvisionedDevice;
let victim: ProvisionedDevice;
let nextId = 1;

async function readyz(): Promise<{ status: number; missing: string[] }> {
  const res = await fetch(`http://127.0.0.1:${gateway.ports.http}/readyz`);
  const body = (await res.json().catch(() => ({}))) as { missing?: string[] };
  return { status: res.status, missing: body.missing ?? [] };
}

async function metric(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const values = (await gateway.metrics.registry.getSingleMetric(name)!.get()).values;
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const open = (d: ProvisionedDevice) =>
  RawSession.open(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret });
const reading = (seq: number) => JSON.stringify({ ts: Date.now(), seq, metrics: { t: 20 } });

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: `max_file_store: ${STORE_MB}MB` });
  nc = await natsClient(nats.url);
  jsm = await jetstreamManager(nc);
  hostile = await provision(nc, 'filler-1', 'acme');
  victim = await provision(nc, 'victim-1', 'acme');
  // As a gateway before the byte limits left it: the new one brings it up to date.
  await jsm.streams.add({ name: DEADLETTER_STREAM, subjects: ['deadletter.>'] });
  ({ gateway } = await startGateway(nats.url, {
    DEVICE_MAX_BYTES_PER_SEC: '0',
    DEVICE_MAX_MSGS_PER_SEC: '0',
    DEADLETTER_MAX_BYTES: String(DEADLETTER_MAX_BYTES),
    PRESENCE_MAX_BYTES: String(4 * MB),
  }));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('a device flooding rejected messages', () => {
  it('cannot fill the store: DEADLETTER keeps its newest letters within DEADLETTER_MAX_BYTES', async () => {
    // As found: a 64 KB topic of U+0001 and a 64 KiB payload, 50 in flight. 600 of them were 470 MB
    // of dead letters; the store is 48 MB.
    const session = await open(hostile);
    const topic = `devices/${hostile.id}/${'\u0001'.repeat(65_000)}`;
    const payload = Buffer.alloc(65_536, 0x01);
    const acked: Promise<void>[] = [];
    for (let i = 0; i < 600; i++) {
      acked.push(session.publish(topic, payload, (i % 65_535) + 1));
      if (acked.length >= 50) await acked.shift();
    }
    await Promise.all(acked);
    await session.drop();

    const state = (await jsm.streams.info(DEADLETTER_STREAM)).state;
    expect(state.bytes).toBeLessThanOrEqual(DEADLETTER_MAX_BYTES);
    expect(state.last_seq).toBeGreaterThanOrEqual(600);
    // Another device is acknowledged, and the gateway is ready.
    const other = await open(victim);
    await other.publish(telemetryTopic(victim.id), reading(1), nextId++, false, 5_000);
    await other.drop();
    expect((await readyz()).status).toBe(200);

    await until('the discarded letters to be counted', async () => {
      const n = await metric('gateway_limit_reached_total', { limit: 'DEADLETTER_MAX_BYTES' });
      return (n ?? 0) > 0;
    });
    const info = await jsm.streams.info(DEADLETTER_STREAM);
    expect(info.config).toMatchObject({ max_bytes: DEADLETTER_MAX_BYTES, discard: DiscardPolicy.Old });
    expect((await jsm.streams.info(PRESENCE_STREAM)).config).toMatchObject({
      max_bytes: 4 * MB,
      discard: DiscardPolicy.Old,
    });
  });
});

describe('byte limits JetStream cannot reserve', () => {
  it('stop the gateway at start, rather than leave the streams unbounded', async () => {
    const small = await startNatsServer({ jetstream: `max_file_store: ${STORE_MB}MB` });
    try {
      await expect(
        startGateway(small.url, { AUTH_MODE: 'open', DEADLETTER_MAX_BYTES: String(2 * STORE_MB * MB) }),
      ).rejects.toMatchObject({ code: 'STREAM_RESERVE_FAILED', stream: DEADLETTER_STREAM });
    } finally {
      await small.dispose();
    }
  });
});

describe('a full store', () => {
  it('acknowledges nothing and says so on /readyz, then recovers by itself once there is room', async () => {
    // Fill what is left of the store from outside the gateway, as TELEMETRY would over time.
    await jsm.streams.add({ name: 'FILLER', subjects: ['filler.>'] });
    const chunk = new Uint8Array(512 * 1024);
    for (let i = 0; i < STORE_MB * 2 + 10; i++) {
      const reply = (await nc.request('filler.x', chunk, { timeout: 5_000 })).string();
      if (reply.includes('"error"')) {
        expect(reply).toContain('insufficient resources');
        break;
      }
    }

    const session = await open(victim);
    const seq = 1_000;
    const pubacked = session.publish(telemetryTopic(victim.id), reading(seq), nextId++, false, 30_000);
    let acked = false;
    pubacked.then(
      () => (acked = true),
      () => {},
    );

    await until('/readyz to say JetStream refuses writes', async () => (await readyz()).status === 503);
    const { missing } = await readyz();
    expect(missing).toContain(`jetstream ${TELEMETRY_STREAM}: insufficient resources`);
    expect(await metric('gateway_jetstream_refusing', { stream: TELEMETRY_STREAM })).toBe(1);
    expect(acked).toBe(false);

    await jsm.streams.purge('FILLER');
    await pubacked;
    await until('/readyz to recover', async () => (await readyz()).status === 200);
    expect(await metric('gateway_jetstream_refusing', { stream: TELEMETRY_STREAM })).toBe(0);
    const stored = (await readStream<{ deviceId: string; seq?: number }>(nc, TELEMETRY_STREAM)).filter(
      (m) => m.data.deviceId === victim.id && m.data.seq === seq,
    );
    expect(stored).toHaveLength(1);
    await session.drop();
  });
});
