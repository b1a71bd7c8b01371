import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CanonicalEvent,
  DEADLETTER_STREAM,
  DeadLetter,
  TELEMETRY_STREAM,
  telemetrySubject,
  telemetryTopic,
} from '../../contract/index.js';
import type { RejectionReason } from '../../contract/rejections.js';
import type { GatewayConfig } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { closedByBroker, connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

/**
 * Hostile payloads from a real mqtt.js client to a real gateway running the default limits
 * (MAX_PAYLOAD_BYTES 64 KiB, MAX_PACKET_BYTES 1 MiB). Each is dead-lettered with its own reason code
 * and still acknowledged, since a dead letter is a stored outcome; nothing reaches TELEMETRY.
 */

const DEPTH = 10_000;
/** "Does not hang": generous, because the machine's two cores are shared with other suites. */
const DEEP_MAX_MS = 5_000;
const DAY_MS = 24 * 3_600_000;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let config: GatewayConfig;
let hostile: ProvisionedDevice;
let friendly: ProvisionedDevice;
let big: ProvisionedDevice;
const clients: MqttClient[] = [];
const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).sort();

async function connect(device: ProvisionedDevice, clientId = device.id): Promise<MqttClient> {
  const client = await connectDevice(gateway.ports.mqtt, device, { clientId });
  // A broker that closes mid-write (the oversize case) surfaces as EPIPE/ECONNRESET here.
  client.on('error', () => {});
  clients.push(client);
  return client;
}

/** Resolves on PUBACK; rejects if the broker closes the connection first (a crash in the hook). */
function publishAcked(client: MqttClient, topic: string, payload: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error('connection closed before the PUBACK'));
    client.once('close', onClose);
    client.publishAsync(topic, payload, { qos: 1 }).then(
      () => {
        client.off('close', onClose);
        resolve();
      },
      (err) => {
        client.off('close', onClose);
        reject(err);
      },
    );
  });
}

const lettersOf = async (deviceId: string) =>
  (await readStream<DeadLetter>(nc, DEADLETTER_STREAM)).filter((m) => m.data.deviceId === deviceId);

// No subject filter: a filtered read of a subject without messages waits out its fetch expiry.
const eventsOf = async (device: ProvisionedDevice) =>
  (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
    (m) => m.subject === telemetrySubject(device.tenant, device.id),
  );

const deep = (open: string, inner: string, close: string, depth = DEPTH) =>
  open.repeat(depth) + inner + close.repeat(depth);
const metricsJson = (count: number) =>
  JSON.stringify({ metrics: Object.fromEntries(Array.from({ length: count }, (_, i) => [`m${i}`, 0])) });

interface HostileCase {
  name: string;
  payload: () => string | Buffer;
  /** The reason of each rejected reading, in order: a batch lists several in its one dead letter. */
  reasons: RejectionReason[];
  /** Bound for "handled without hanging", publish to PUBACK. */
  maxMs?: number;
}

const now = Date.now();
const json = (value: unknown) => () => JSON.stringify(value);
const text = (value: string) => () => value;
const bytes = (value: number[]) => () => Buffer.from(value);

const CASES: HostileCase[] = [
  // Not JSON at all.
  { name: 'JSON cut short', payload: text('{"metrics": {"a": 1}'), reasons: ['PAYLOAD_NOT_JSON'] },
  { name: 'trailing comma', payload: text('{"metrics":{"a":1,}}'), reasons: ['PAYLOAD_NOT_JSON'] },
  { name: 'single quotes', payload: text("{'metrics':{'a':1}}"), reasons: ['PAYLOAD_NOT_JSON'] },
  { name: 'empty payload', payload: text(''), reasons: ['PAYLOAD_NOT_JSON'] },
  {
    name: 'byte order mark first',
    payload: text('\ufeff{"metrics":{"a":1}}'),
    reasons: ['PAYLOAD_NOT_JSON'],
  },
  { name: 'bare NaN token', payload: text('{"metrics":{"a":NaN}}'), reasons: ['PAYLOAD_NOT_JSON'] },
  { name: 'bare Infinity token', payload: text('{"metrics":{"a":Infinity}}'), reasons: ['PAYLOAD_NOT_JSON'] },
  // Deep nesting: V8's JSON.parse is iterative, but JSON.stringify recurses and throws a RangeError at a
  // few thousand levels, which the dead letter of a batch reading and a detail quoting `v` ran into.
  {
    name: `${DEPTH} levels of [ never closed`,
    payload: () => '['.repeat(DEPTH),
    reasons: ['PAYLOAD_NOT_JSON'],
    maxMs: DEEP_MAX_MS,
  },
  {
    name: `${DEPTH} levels of [ closed (a batch whose reading is an array)`,
    payload: () => deep('[', '', ']'),
    reasons: ['SCHEMA_INVALID'],
    maxMs: DEEP_MAX_MS,
  },
  {
    name: `${DEPTH} levels of objects as a metric value`,
    payload: () => `{"metrics":{"a":${deep('{"a":', '1', '}')}}}`,
    reasons: ['VALUE_INVALID'],
    maxMs: DEEP_MAX_MS,
  },
  {
    name: `${DEPTH} levels of [ as v`,
    payload: () => `{"v":${deep('[', '', ']')},"metrics":{"a":1}}`,
    reasons: ['VERSION_UNSUPPORTED'],
    maxMs: DEEP_MAX_MS,
  },
  {
    name: `a batch of two readings ${DEPTH} levels deep`,
    payload: () => `[${deep('[', '', ']')},{"metrics":{"a":1},"v":${deep('[', '', ']')}}]`,
    reasons: ['SCHEMA_INVALID', 'VERSION_UNSUPPORTED'],
    maxMs: DEEP_MAX_MS,
  },
  // Size: between MAX_PAYLOAD_BYTES and MAX_PACKET_BYTES a payload is a dead letter; above
  // MAX_PACKET_BYTES the connection is closed instead (see the 10 MB test below).
  {
    name: '100 kB payload (above MAX_PAYLOAD_BYTES, below MAX_PACKET_BYTES)',
    payload: json({ metrics: { a: 1 }, pad: 'x'.repeat(100_000) }),
    reasons: ['PAYLOAD_TOO_LARGE'],
  },
  // 10,000 metrics take ~99 kB of JSON, so the size limit answers before the metric count does.
  {
    name: '10,000 metrics in one reading',
    payload: () => metricsJson(10_000),
    reasons: ['PAYLOAD_TOO_LARGE'],
  },
  {
    name: '5,000 metrics in one reading (fits 64 KiB)',
    payload: () => metricsJson(5_000),
    reasons: ['TOO_MANY_METRICS'],
  },
  // Non-finite numbers, as strings and as what JSON.parse makes of an overflowing literal.
  { name: '"NaN"', payload: json({ metrics: { a: 'NaN' } }), reasons: ['VALUE_INVALID'] },
  { name: '"Infinity"', payload: json({ metrics: { a: 'Infinity' } }), reasons: ['VALUE_INVALID'] },
  { name: '"-Infinity"', payload: json({ metrics: { a: '-Infinity' } }), reasons: ['VALUE_INVALID'] },
  {
    name: 'v2 value "NaN"',
    payload: json({ v: 2, metrics: { a: { value: 'NaN' } } }),
    reasons: ['VALUE_INVALID'],
  },
  {
    name: '1e309 (Infinity once parsed)',
    payload: text('{"metrics":{"a":1e309}}'),
    reasons: ['VALUE_INVALID'],
  },
  { name: '-1e309', payload: text('{"metrics":{"a":-1e309}}'), reasons: ['VALUE_INVALID'] },
  {
    name: '1e308 kWh (finite, but Infinity in Wh)',
    payload: json({ v: 2, metrics: { energy: { value: 1e308, unit: 'kWh' } } }),
    reasons: ['VALUE_INVALID'],
  },
  {
    name: '-1e308 psi (-Infinity in hPa)',
    payload: json({ v: 2, metrics: { pressure: { value: -1e308, unit: 'psi' } } }),
    reasons: ['VALUE_INVALID'],
  },
  { name: 'ts 1e309', payload: text('{"ts":1e309,"metrics":{"a":1}}'), reasons: ['TS_INVALID'] },
  // Prototype pollution through metric names (top-level keys: see the test below).
  {
    name: 'metric __proto__',
    payload: text('{"metrics":{"__proto__":{"polluted":true}}}'),
    reasons: ['METRIC_NAME_INVALID'],
  },
  {
    name: 'metric constructor',
    payload: text('{"metrics":{"constructor":1}}'),
    reasons: ['METRIC_NAME_INVALID'],
  },
  {
    name: 'metric prototype',
    payload: text('{"metrics":{"prototype":1}}'),
    reasons: ['METRIC_NAME_INVALID'],
  },
  {
    name: 'v2 metric __proto__',
    payload: text('{"v":2,"metrics":{"__proto__":{"value":1,"polluted":true}}}'),
    reasons: ['METRIC_NAME_INVALID'],
  },
  {
    name: 'metric name of 60,000 characters',
    payload: json({ metrics: { ['n'.repeat(60_000)]: 1 } }),
    reasons: ['METRIC_NAME_INVALID'],
  },
  // Not UTF-8.
  {
    name: 'invalid continuation byte',
    payload: bytes([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]),
    reasons: ['PAYLOAD_NOT_UTF8'],
  },
  { name: 'overlong "/"', payload: bytes([0x22, 0xc0, 0xaf, 0x22]), reasons: ['PAYLOAD_NOT_UTF8'] },
  {
    name: 'UTF-16 surrogate (CESU-8)',
    payload: bytes([0x22, 0xed, 0xa0, 0x80, 0x22]),
    reasons: ['PAYLOAD_NOT_UTF8'],
  },
  {
    name: 'Latin-1 degree sign',
    payload: () => Buffer.from('{"metrics":{"t\xb0":1}}', 'latin1'),
    reasons: ['PAYLOAD_NOT_UTF8'],
  },
  {
    name: 'UTF-16LE JSON',
    payload: () => Buffer.from('{"metrics":{"a":1}}', 'utf16le'),
    reasons: ['PAYLOAD_NOT_JSON'],
  },
  // Timestamps far away.
  { name: 'ts 0 (1970)', payload: json({ ts: 0, metrics: { a: 1 } }), reasons: ['TS_TOO_OLD'] },
  {
    name: 'ts in epoch seconds',
    payload: json({ ts: Math.floor(now / 1000), metrics: { a: 1 } }),
    reasons: ['TS_TOO_OLD'],
  },
  {
    name: 'ts 8 days ago',
    payload: json({ ts: now - 8 * DAY_MS, metrics: { a: 1 } }),
    reasons: ['TS_TOO_OLD'],
  },
  {
    name: 'ts a day ahead',
    payload: json({ ts: now + DAY_MS, metrics: { a: 1 } }),
    reasons: ['TS_IN_FUTURE'],
  },
  {
    name: 'ts 8.64e15 (last ms a Date holds)',
    payload: json({ ts: 8.64e15, metrics: { a: 1 } }),
    reasons: ['TS_IN_FUTURE'],
  },
  {
    name: 'ts 1e20 (past what a Date holds)',
    payload: json({ ts: 1e20, metrics: { a: 1 } }),
    reasons: ['TS_IN_FUTURE'],
  },
  {
    name: 'ts year 9999',
    payload: json({ ts: '9999-12-31T23:59:59Z', metrics: { a: 1 } }),
    reasons: ['TS_IN_FUTURE'],
  },
  {
    name: 'ts year 1970 ISO',
    payload: json({ ts: '1970-01-01T00:00:00Z', metrics: { a: 1 } }),
    reasons: ['TS_TOO_OLD'],
  },
  {
    name: 'ts year +275760',
    payload: json({ ts: '+275760-09-13T00:00:00Z', metrics: { a: 1 } }),
    reasons: ['TS_INVALID'],
  },
  {
    name: 'ts February 30',
    payload: json({ ts: '2026-02-30T00:00:00Z', metrics: { a: 1 } }),
    reasons: ['TS_INVALID'],
  },
  {
    name: 'ts without zone',
    payload: json({ ts: '2026-11-28T12:00:00', metrics: { a: 1 } }),
    reasons: ['TS_INVALID'],
  },
  { name: 'ts negative', payload: json({ ts: -1, metrics: { a: 1 } }), reasons: ['TS_INVALID'] },
  // Wrong types.
  { name: 'reading is a number', payload: text('42'), reasons: ['SCHEMA_INVALID'] },
  { name: 'reading is null', payload: text('null'), reasons: ['SCHEMA_INVALID'] },
  { name: 'reading is a string', payload: text('"hot"'), reasons: ['SCHEMA_INVALID'] },
  { name: 'metrics missing', payload: json({ ts: now }), reasons: ['SCHEMA_INVALID'] },
  { name: 'metrics is an array', payload: json({ metrics: [1, 2] }), reasons: ['SCHEMA_INVALID'] },
  { name: 'metrics is null', payload: json({ metrics: null }), reasons: ['SCHEMA_INVALID'] },
  { name: 'metrics is empty', payload: json({ metrics: {} }), reasons: ['METRICS_EMPTY'] },
  { name: 'value is an object', payload: json({ metrics: { a: { b: 1 } } }), reasons: ['VALUE_INVALID'] },
  { name: 'value is null', payload: json({ metrics: { a: null } }), reasons: ['VALUE_INVALID'] },
  {
    name: 'value is a numeric string',
    payload: json({ metrics: { a: '21.5' } }),
    reasons: ['VALUE_INVALID'],
  },
  {
    name: 'v2 metric is a plain number',
    payload: json({ v: 2, metrics: { a: 1 } }),
    reasons: ['SCHEMA_INVALID'],
  },
  {
    name: 'v2 value missing',
    payload: json({ v: 2, metrics: { a: { unit: 'm' } } }),
    reasons: ['VALUE_INVALID'],
  },
  {
    name: 'unit is a number',
    payload: json({ v: 2, metrics: { a: { value: 1, unit: 5 } } }),
    reasons: ['UNIT_UNKNOWN'],
  },
  {
    name: 'unit of 33 characters',
    payload: json({ v: 2, metrics: { a: { value: 1, unit: 'u'.repeat(33) } } }),
    reasons: ['UNIT_UNKNOWN'],
  },
  { name: 'seq is a string', payload: json({ seq: '1', metrics: { a: 1 } }), reasons: ['SEQ_INVALID'] },
  { name: 'seq is fractional', payload: json({ seq: 1.5, metrics: { a: 1 } }), reasons: ['SEQ_INVALID'] },
  { name: 'seq beyond 2^53', payload: text('{"seq":1e300,"metrics":{"a":1}}'), reasons: ['SEQ_INVALID'] },
  { name: 'ts is a boolean', payload: json({ ts: true, metrics: { a: 1 } }), reasons: ['TS_INVALID'] },
  { name: 'v is a string', payload: json({ v: '2', metrics: { a: 1 } }), reasons: ['VERSION_UNSUPPORTED'] },
  { name: 'v is null', payload: json({ v: null, metrics: { a: 1 } }), reasons: ['VERSION_UNSUPPORTED'] },
  { name: 'v is 1e309', payload: text('{"v":1e309,"metrics":{"a":1}}'), reasons: ['VERSION_UNSUPPORTED'] },
];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  hostile = await provision(nc, 'hostile-1');
  friendly = await provision(nc, 'friendly-1');
  big = await provision(nc, 'big-1');
  ({ gateway, config } = await startGateway(nats.url));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('each hostile payload is dead-lettered with its own reason, and acknowledged', () => {
  let client: MqttClient | undefined;

  it('runs with the default limits this table assumes', () => {
    expect(config.MAX_PAYLOAD_BYTES).toBe(65_536);
    expect(config.MAX_PACKET_BYTES).toBe(1_048_576);
  });

  it.each(CASES)('$name → $reasons', async ({ payload, reasons, maxMs }) => {
    // A case that crashes the hook closes the connection; the next case gets a fresh one.
    if (client === undefined || !client.connected) client = await connect(hostile);
    const body = payload();
    const before = (await lettersOf(hostile.id)).length;
    const eventsBefore = (await eventsOf(hostile)).length;
    const started = performance.now();
    await publishAcked(client, telemetryTopic(hostile.id), body);
    const elapsedMs = performance.now() - started;

    const letters = (await lettersOf(hostile.id)).slice(before);
    expect(letters).toHaveLength(1);
    expect(letters[0]!.data.rejections?.map((r) => r.reason) ?? [letters[0]!.data.reason]).toEqual(reasons);
    const sent = Buffer.isBuffer(body) ? body : Buffer.from(body);
    for (const letter of letters) {
      expect(DeadLetter.safeParse(letter.data).success).toBe(true);
      expect(letter.subject).toBe(`deadletter.${hostile.tenant}.${letter.data.reason}`);
      expect(letter.data.detail.length).toBeGreaterThan(0);
      expect(letter.data.detail.length).toBeLessThanOrEqual(300);
      // The whole payload, also for a batch reading too deep to serialise on its own.
      expect(letter.data.payloadBytes).toBe(sent.byteLength);
    }
    expect((await eventsOf(hostile)).slice(eventsBefore)).toEqual([]);
    if (maxMs !== undefined) expect(elapsedMs).toBeLessThan(maxMs);
  });
});

describe('hostile but valid: accepted as the contract says, and harmless', () => {
  it('1e308 is a finite number and is stored as it is', async () => {
    const client = await connect(friendly, `${friendly.id}:huge`);
    const ts = Date.now();
    await publishAcked(client, telemetryTopic(friendly.id), `{"ts":${ts},"seq":1,"metrics":{"huge":1e308}}`);
    const events = (await eventsOf(friendly)).filter((e) => e.data.seq === 1);
    expect(events.map((e) => e.data.metrics)).toEqual([{ huge: { value: 1e308, unit: '' } }]);
  });

  it('metric names of Object.prototype methods are plain names (they crashed the hook)', async () => {
    const client = await connect(friendly, `${friendly.id}:methods`);
    const ts = Date.now();
    const metrics = {
      toString: 1,
      valueOf: 2,
      hasOwnProperty: 3,
      'motor.isPrototypeOf': 4,
      __defineGetter__: 5,
    };
    await publishAcked(client, telemetryTopic(friendly.id), JSON.stringify({ ts, seq: 2, metrics }));
    const [event] = (await eventsOf(friendly)).filter((e) => e.data.seq === 2);
    expect(CanonicalEvent.parse(event!.data)).toEqual(event!.data);
    expect(Object.fromEntries(Object.entries(event!.data.metrics).map(([k, m]) => [k, m.value]))).toEqual(
      metrics,
    );
  });

  it('top-level __proto__, constructor, prototype: unknown fields, ignored; nothing polluted', async () => {
    const client = await connect(friendly, `${friendly.id}:proto`);
    const ts = Date.now();
    const payloads = [
      `{"__proto__":{"polluted":true,"v":2},"ts":${ts},"seq":3,"metrics":{"a":1}}`,
      `{"constructor":{"prototype":{"polluted":true}},"ts":${ts},"seq":4,"metrics":{"a":1}}`,
      `{"prototype":{"polluted":true},"ts":${ts},"seq":5,"metrics":{"a":1}}`,
      `[{"__proto__":{"polluted":true},"ts":${ts},"seq":6,"metrics":{"a":1}}]`,
    ];
    for (const payload of payloads) await publishAcked(client, telemetryTopic(friendly.id), payload);
    const events = (await eventsOf(friendly)).filter((e) => [3, 4, 5, 6].includes(e.data.seq ?? -1));
    expect(events).toHaveLength(4);
    for (const { data } of events) {
      // schemaVersion 1: a `v` inside `__proto__` is not the payload's `v`.
      expect(data).toMatchObject({ schemaVersion: 1, metrics: { a: { value: 1, unit: '' } } });
      expect(Object.keys(data).sort()).toEqual(
        ['deviceId', 'id', 'labels', 'metrics', 'receivedAt', 'schemaVersion', 'seq', 'tenant', 'ts'].sort(),
      );
      expect(JSON.stringify(data)).not.toContain('polluted');
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe(`a 10 MB body is above MAX_PACKET_BYTES`, () => {
  it('closes the connection at the header: no PUBACK, event or dead letter; reconnecting works', async () => {
    const client = await connect(big);
    const closed = closedByBroker(client, 15_000);
    client.publish(telemetryTopic(big.id), Buffer.alloc(10 * 1024 * 1024, 0x20), { qos: 1 });
    await closed;
    expect(await eventsOf(big)).toEqual([]);
    expect(await lettersOf(big.id)).toEqual([]);

    const again = await connect(big);
    await publishAcked(again, telemetryTopic(big.id), `{"ts":${Date.now()},"seq":1,"metrics":{"a":1}}`);
    expect((await eventsOf(big)).map((e) => e.data.seq)).toEqual([1]);
  });
});

it('leaves Object.prototype as it was after every payload above', () => {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(prototypeBefore);
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.getPrototypeOf({})).toBe(Object.prototype);
});
