import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { encode as encodeCbor } from 'cbor-x';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import {
  type CanonicalEvent,
  type PresenceEvent,
  TELEMETRY_MEASUREMENT,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import { PRESENCE_STREAM } from '../../contract/subjects.js';
import type { Gateway } from '../../gateway/gateway.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessor, type Processor } from '../../processors/processor.js';
import { type CurlAnswer, curl } from '../kit/curl.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';
import { startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

/**
 * HTTP ingest with curl (a client nobody here wrote) against a real gateway, nats-server, processors
 * and VictoriaMetrics: what a device posts is stored and readable in the TSDB, and every refusal
 * comes with its status and code.
 */

let nats: NatsServer;
let tsdb: Tsdb;
let nc: NatsConnection;
let gateway: Gateway;
let processor: Processor;
let device: ProvisionedDevice;
let other: ProvisionedDevice;
let dir: string;

const url = (id: string, kind = 'telemetry') =>
  `http://127.0.0.1:${gateway.ports.httpIngest}/v1/devices/${id}/${kind}`;
/** curl's arguments for one POST as `who`, of `body` (`@file` for a file's bytes). */
const postArgs = (id: string, body: string, who = device, type = 'application/json', kind = 'telemetry') => [
  '-u',
  `${who.id}:${who.secret}`,
  '-H',
  `content-type: ${type}`,
  '--data-binary',
  body,
  url(id, kind),
];
const post = async (id: string, body: string, who = device, type = 'application/json') =>
  (await curl(postArgs(id, body, who, type)))[0]!;

/** A connection of its own: the test's may still be reconnecting after the NATS outage. */
async function eventsOf(id: string): Promise<CanonicalEvent[]> {
  const reader = await natsClient(nats.url);
  try {
    return (await readStream<CanonicalEvent>(reader, TELEMETRY_STREAM))
      .map((e) => e.data)
      .filter((e) => e.deviceId === id);
  } finally {
    await reader.close();
  }
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    HTTP_INGEST_PORT: '0',
    ACK_TIMEOUT_MS: '500',
    HTTP_INGEST_STORE_TIMEOUT_MS: '3000',
  }));
  device = await provision(nc, 'http-1', 'acme', { site: 'lab' });
  other = await provision(nc, 'http-2', 'acme');
  dir = await mkdtemp(join(tmpdir(), 'http-ingest-'));
  const config = loadConfig(ProcessorConfigSchema, {
    NATS_URL: nats.url,
    INFLUX_URL: tsdb.url,
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    CHECKPOINT_INTERVAL: '200ms',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  });
  processor = await createProcessor(config, createLogger('processors', config.LOG_LEVEL));
});

afterAll(async () => {
  await processor?.close();
  await gateway?.close();
  await nc?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('POST /v1/devices/{id}/telemetry', () => {
  it('stores a valid reading, readable in the TSDB, and a repeat of it is a duplicate', async () => {
    const reading = JSON.stringify({ seq: 1, ts: Date.now() - 1_000, metrics: { temperature: 21.5 } });
    const first = await post(device.id, reading);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ stored: 1, duplicates: 0, rejected: [] });
    const again = await post(device.id, reading);
    expect(again.body).toEqual({ stored: 0, duplicates: 1, rejected: [] });

    const samples = await tsdb.waitForSamples(
      { measurement: TELEMETRY_MEASUREMENT, field: 'temperature', tags: { device: device.id } },
      (s) => s.length >= 1,
      20_000,
    );
    expect(samples.map((s) => s.value)).toEqual([21.5]);
    expect(samples[0]!.tags).toMatchObject({ tenant: 'acme', site: 'lab' });
  });

  it('stores a CBOR body exactly as its JSON twin, and each is a duplicate of the other', async () => {
    const ts = Date.now() - 2_000;
    const batch = [
      { ts, seq: 7, metrics: { temperature: 19.25 } },
      { v: 2, ts: ts + 1, seq: 8, metrics: { temperature: { value: 70.1, unit: 'degF' } } },
    ];
    const file = join(dir, 'batch.cbor');
    await writeFile(file, encodeCbor(batch));
    const cbor = await post(other.id, `@${file}`, other, 'application/cbor');
    expect(cbor.status).toBe(200);
    expect(cbor.body).toEqual({ stored: 2, duplicates: 0, rejected: [] });
    // The same readings as JSON: the same events, so duplicates.
    const json = await post(other.id, JSON.stringify(batch), other);
    expect(json.body).toEqual({ stored: 0, duplicates: 2, rejected: [] });
    const events = (await eventsOf(other.id)).filter((e) => e.seq === 7 || e.seq === 8);
    expect(events.map((e) => [e.seq, e.metrics.temperature])).toEqual([
      [7, { value: 19.25, unit: 'degC' }],
      [8, { value: 21.166666666666664, unit: 'degC', originalUnit: 'degF' }],
    ]);
    // Bytes that are no CBOR: the whole body refused, with the code.
    await writeFile(file, Buffer.from([0xa1, 0x67]));
    const bad = await post(other.id, `@${file}`, other, 'application/cbor');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ rejected: [{ code: 'PAYLOAD_NOT_CBOR' }] });
  });

  it('answers a batch with one bad reading 200, naming that reading and its code', async () => {
    const ts = Date.now() - 500;
    const batch = JSON.stringify([
      { seq: 10, ts, metrics: { humidity: 40 } },
      { v: 2, seq: 11, ts, metrics: { temperature: { value: 20, unit: 'furlongs' } } },
      { seq: 12, ts, metrics: { humidity: 41 } },
    ]);
    const answer = await post(device.id, batch);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ stored: 2, duplicates: 0 });
    expect(answer.body.rejected).toEqual([{ index: 1, code: 'UNIT_UNKNOWN', detail: expect.any(String) }]);
    const seqs = (await eventsOf(device.id)).map((e) => e.seq);
    expect(seqs).toEqual(expect.arrayContaining([10, 12]));
    expect(seqs).not.toContain(11);
  });

  it('takes a reading already stored over MQTT as a duplicate: one device, one deduplication', async () => {
    const reading = JSON.stringify({ seq: 77, ts: Date.now() - 300, metrics: { temperature: 19 } });
    const client = await connectDevice(gateway.ports.mqtt, device);
    await client.publishAsync(telemetryTopic(device.id), reading, { qos: 1 });
    await client.endAsync();
    expect((await post(device.id, reading)).body).toEqual({ stored: 0, duplicates: 1, rejected: [] });
    expect((await eventsOf(device.id)).filter((e) => e.seq === 77)).toHaveLength(1);
  });

  it('stores a repeated request without ts once when it carries the same Idempotency-Key', async () => {
    const body = JSON.stringify([{ metrics: { humidity: 55 } }, { metrics: { humidity: 56 } }]);
    const key = ['-H', 'idempotency-key: 5b0e3c2a-batch-1'];
    const [first] = await curl([...key, ...postArgs(device.id, body)]);
    const [again] = await curl([...key, ...postArgs(device.id, body)]);
    expect(first!.body).toEqual({ stored: 2, duplicates: 0, rejected: [] });
    expect(again!.body).toEqual({ stored: 0, duplicates: 2, rejected: [] });
  });

  it('answers a body that is no payload 400 with its code', async () => {
    const answer = await post(device.id, 'not json');
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      code: 'PAYLOAD_REJECTED',
      stored: 0,
      rejected: [{ index: null, code: 'PAYLOAD_NOT_JSON' }],
    });
  });

  it('keeps the connection alive across requests', async () => {
    const body = JSON.stringify({ metrics: { temperature: 1 } });
    const answers = await curl(postArgs(device.id, body), postArgs(device.id, body));
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    expect(answers.map((a) => a.connects)).toEqual([1, 0]);
  });

  it('refuses a wrong secret 401, another device’s credentials 403', async () => {
    const wrong = await post(device.id, '{"metrics":{"t":1}}', { ...device, secret: 'nope' });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(wrong.headers).toMatch(/www-authenticate: Basic/i);
    const none = (
      await curl(['-H', 'content-type: application/json', '--data-binary', '{}', url(device.id)])
    )[0]!;
    expect(none.status).toBe(401);
    const foreign = await post(device.id, '{"metrics":{"t":1}}', other);
    expect(foreign.status).toBe(403);
    expect(foreign.body).toMatchObject({ code: 'FORBIDDEN' });
  });

  it('refuses a body over MAX_PAYLOAD_BYTES 413, declared or chunked, and another media type 415', async () => {
    const file = join(dir, 'big.json');
    await writeFile(file, JSON.stringify({ metrics: { temperature: 1 }, pad: 'x'.repeat(70_000) }));
    const big = await post(device.id, `@${file}`);
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
    const [chunked] = await curl(['-H', 'transfer-encoding: chunked', ...postArgs(device.id, `@${file}`)]);
    expect(chunked!.status).toBe(413);
    const text = await post(device.id, '{}', device, 'text/plain');
    expect(text.status).toBe(415);
    expect(text.body).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
  });

  it('asks for the body (100 Continue) only once the request passed its checks', async () => {
    const body = JSON.stringify({ metrics: { temperature: 2 } });
    const expect100 = ['-H', 'expect: 100-continue'];
    const [refused] = await curl([...expect100, ...postArgs(device.id, body, { ...device, secret: 'nope' })]);
    expect(refused!.status).toBe(401);
    expect(refused!.headers).not.toMatch(/100 Continue/);
    const [taken] = await curl([...expect100, ...postArgs(device.id, body)]);
    expect(taken!.status).toBe(200);
    expect(taken!.headers).toMatch(/^HTTP\/1.1 100 Continue/);
  });

  it('answers 404 for another path and 405 for another method', async () => {
    const auth = ['-u', `${device.id}:${device.secret}`];
    const [missing] = await curl([
      ...auth,
      '-X',
      'POST',
      `http://127.0.0.1:${gateway.ports.httpIngest}/v1/nothing`,
    ]);
    expect(missing!.status).toBe(404);
    const [get] = await curl([...auth, url(device.id)]);
    expect(get!.status).toBe(405);
  });
});

describe('POST /v1/devices/{id}/status', () => {
  it('stores a status event', async () => {
    const [status] = await curl(postArgs(device.id, '{"fw":"1.2"}', device, 'application/json', 'status'));
    expect(status!.status).toBe(200);
    expect(status!.body).toEqual({ stored: 1 });
    const reader = await natsClient(nats.url);
    const events = (await readStream<PresenceEvent>(reader, PRESENCE_STREAM)).map((e) => e.data);
    await reader.close();
    expect(events).toContainEqual(
      expect.objectContaining({
        deviceId: device.id,
        type: 'status',
        status: { fw: '1.2' },
        clientId: `${device.id}:http`,
      }),
    );
  });
});

describe('NATS outage', () => {
  it('answers 503 while NATS is away, stores nothing, and stores the retry once it is back', async () => {
    const ts = Date.now() - 200;
    const reading = JSON.stringify({ seq: 500, ts, metrics: { temperature: 30 } });
    await nats.stop();
    await until(() => gateway.notReady().includes('nats'), 'the gateway to notice');
    const refused = await post(device.id, reading);
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ code: 'NATS_UNAVAILABLE' });
    expect(refused.headers).toMatch(/retry-after: \d+/i);

    await nats.restart();
    await until(() => gateway.notReady().length === 0, 'readiness');
    expect((await eventsOf(device.id)).filter((e) => e.seq === 500)).toHaveLength(0);
    const stored = await post(device.id, reading);
    expect(stored.status).toBe(200);
    expect(stored.body).toEqual({ stored: 1, duplicates: 0, rejected: [] });
    expect((await eventsOf(device.id)).filter((e) => e.seq === 500)).toHaveLength(1);
  });

  it('answers a request JetStream does not confirm in time 503 NOT_STORED, and its retry stores it once', async () => {
    // A stopped (SIGSTOP) server keeps its connection: publishes go out and no acknowledgement
    // comes, as when a stream leader is lost. The store timeout (3 s here) gives them up.
    const reading = JSON.stringify({ seq: 600, ts: Date.now() - 200, metrics: { temperature: 31 } });
    process.kill(nats.pid!, 'SIGSTOP');
    let held: CurlAnswer;
    try {
      held = await post(device.id, reading);
    } finally {
      process.kill(nats.pid!, 'SIGCONT');
    }
    expect(held.status).toBe(503);
    expect(held.body).toMatchObject({ code: 'NOT_STORED', stored: 0, duplicates: 0, unconfirmed: [0] });
    expect(held.headers).toMatch(/retry-after: \d+/i);

    await until(() => gateway.notReady().length === 0, 'readiness');
    const again = await post(device.id, reading);
    expect(again.status).toBe(200);
    // The resent publishes reached the server once it ran again: stored then, or now; never twice.
    expect((again.body.stored as number) + (again.body.duplicates as number)).toBe(1);
    expect((await eventsOf(device.id)).filter((e) => e.seq === 600)).toHaveLength(1);
  });
});
