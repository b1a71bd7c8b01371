import { encode } from 'cbor-x';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAYLOAD_VERSIONS, payloadVersionOf } from '../../contract/device-payload.js';
import { isMetricName, MAX_METRICS_PER_READING } from '../../contract/index.js';
import {
  fastReadingV1,
  type ParsedReading,
  parseTelemetryPayload,
} from '../../gateway/ingest/parse-payload.js';

const MAX = 65_536;
const MAX_READINGS = 1_000;
const parse = (value: unknown) =>
  parseTelemetryPayload(Buffer.from(JSON.stringify(value)), MAX, MAX_READINGS);
const only = (value: unknown): ParsedReading => {
  const { readings } = parse(value);
  expect(readings).toHaveLength(1);
  return readings[0]!;
};
const reasonOf = (value: unknown) => {
  const r = only(value);
  return r.ok ? 'accepted' : r.reason;
};

describe('version 1', () => {
  it('upcasts plain numbers, booleans as 1/0, epoch ms and seq', () => {
    expect(
      only({ ts: 1_700_000_000_000, seq: 7, metrics: { temperature: 21.5, door: true, fan: false } }),
    ).toEqual({
      ok: true,
      index: 0,
      version: 1,
      reading: {
        ts: 1_700_000_000_000,
        seq: 7,
        metrics: [
          { name: 'temperature', value: 21.5 },
          { name: 'door', value: 1 },
          { name: 'fan', value: 0 },
        ],
      },
    });
  });

  it('accepts ISO-8601 timestamps with a zone and ignores unknown fields', () => {
    const r = only({ ts: '2026-01-02T03:04:05.678+01:00', firmware: '1.2', metrics: { x: 1 } });
    expect(r).toMatchObject({ ok: true, reading: { ts: Date.parse('2026-01-02T02:04:05.678Z') } });
  });

  it('leaves ts and seq undefined when absent', () => {
    expect(only({ metrics: { x: 1 } })).toMatchObject({
      ok: true,
      reading: { ts: undefined, seq: undefined },
    });
  });
});

describe('version 2', () => {
  it('keeps units for the normaliser', () => {
    expect(
      only({ v: 2, seq: 1, metrics: { temperature: { value: 70.1, unit: 'degF' }, rssi: { value: -70 } } }),
    ).toEqual({
      ok: true,
      index: 0,
      version: 2,
      reading: {
        ts: undefined,
        seq: 1,
        metrics: [
          { name: 'temperature', value: 70.1, unit: 'degF' },
          { name: 'rssi', value: -70 },
        ],
      },
    });
  });
});

describe('batches', () => {
  it('parses each reading and rejects only the bad ones, with their index', () => {
    const { batch, readings } = parse([
      { metrics: { a: 1 } },
      { metrics: { a: 'x' } },
      { v: 2, metrics: { b: { value: 2 } } },
    ]);
    expect(batch).toBe(true);
    expect(readings.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'VALUE_INVALID', 'ok']);
    expect(readings[1]).toMatchObject({ index: 1, reason: 'VALUE_INVALID' });
  });

  it('refuses a batch of more than the readings allowed in one publish whole, before looking at them', () => {
    const { batch, readings } = parse(Array.from({ length: MAX_READINGS + 1 }, () => 1));
    expect(batch).toBe(false);
    expect(readings).toEqual([
      expect.objectContaining({ ok: false, reason: 'BATCH_TOO_LARGE', index: undefined }),
    ]);
    expect(parse(Array.from({ length: MAX_READINGS }, () => ({ metrics: { a: 1 } }))).readings).toHaveLength(
      MAX_READINGS,
    );
  });
});

describe('rejections carry their reason code', () => {
  it.each([
    ['a metric name with a space', { metrics: { 'a b': 1 } }, 'METRIC_NAME_INVALID'],
    ['a 65-character metric name', { metrics: { ['m'.repeat(65)]: 1 } }, 'METRIC_NAME_INVALID'],
    ['a string value', { metrics: { a: '1' } }, 'VALUE_INVALID'],
    ['"NaN" as a string', { metrics: { a: 'NaN' } }, 'VALUE_INVALID'],
    ['null value', { metrics: { a: null } }, 'VALUE_INVALID'],
    ['no metrics', { metrics: {} }, 'METRICS_EMPTY'],
    ['metrics missing', { ts: 1 }, 'SCHEMA_INVALID'],
    ['metrics an array', { metrics: [1] }, 'SCHEMA_INVALID'],
    ['a reading that is a number', 42, 'SCHEMA_INVALID'],
    [
      'too many metrics',
      { metrics: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`m${i}`, i])) },
      'TOO_MANY_METRICS',
    ],
    ['negative seq', { seq: -1, metrics: { a: 1 } }, 'SEQ_INVALID'],
    ['fractional seq', { seq: 1.5, metrics: { a: 1 } }, 'SEQ_INVALID'],
    ['ts as a date without zone', { ts: '2026-01-02 03:04', metrics: { a: 1 } }, 'TS_INVALID'],
    ['ts negative', { ts: -5, metrics: { a: 1 } }, 'TS_INVALID'],
    ['unknown version', { v: 9, metrics: { a: 1 } }, 'VERSION_UNSUPPORTED'],
    ['version as a string', { v: '2', metrics: { a: 1 } }, 'VERSION_UNSUPPORTED'],
    ['v2 with a plain number', { v: 2, metrics: { a: 1 } }, 'SCHEMA_INVALID'],
    [
      'v2 with an over-long unit',
      { v: 2, metrics: { a: { value: 1, unit: 'u'.repeat(33) } } },
      'UNIT_UNKNOWN',
    ],
  ])('%s', (_what, value, reason) => {
    expect(reasonOf(value)).toBe(reason);
  });

  it('refuses __proto__ and constructor as metric names instead of dropping them', () => {
    const proto = parseTelemetryPayload(
      Buffer.from('{"metrics":{"__proto__":{"polluted":1},"x":1}}'),
      MAX,
      MAX_READINGS,
    );
    expect(proto.readings[0]).toMatchObject({ ok: false, reason: 'METRIC_NAME_INVALID' });
    expect(reasonOf({ metrics: { constructor: 1 } })).toBe('METRIC_NAME_INVALID');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a huge number that JSON turns into Infinity', () => {
    const r = parseTelemetryPayload(Buffer.from('{"metrics":{"a":1e999}}'), MAX, MAX_READINGS);
    expect(r.readings[0]).toMatchObject({ ok: false, reason: 'VALUE_INVALID' });
  });

  it('whole-payload problems', () => {
    const whole = (bytes: Buffer, max = MAX) => parseTelemetryPayload(bytes, max, MAX_READINGS).readings[0];
    expect(whole(Buffer.from('{"metrics":{"a":1}}'), 10)).toMatchObject({
      reason: 'PAYLOAD_TOO_LARGE',
      index: undefined,
    });
    expect(whole(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))).toMatchObject({ reason: 'PAYLOAD_NOT_UTF8' });
    expect(whole(Buffer.from('{"metrics":'))).toMatchObject({ reason: 'PAYLOAD_NOT_JSON' });
    expect(whole(Buffer.from(''))).toMatchObject({ reason: 'PAYLOAD_NOT_JSON' });
    expect(whole(Buffer.from('[]'))).toMatchObject({ reason: 'BATCH_EMPTY' });
    expect(whole(Buffer.from('['.repeat(60_000)), 100_000)).toMatchObject({ reason: 'PAYLOAD_NOT_JSON' });
  });
});

describe('properties', () => {
  const anyJson = fc.jsonValue({ maxDepth: 4 });
  const plausible = fc.record(
    {
      v: fc.constantFrom(1, 2, 3, '2', undefined),
      ts: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant('2026-01-01T00:00:00Z')),
      seq: fc.oneof(fc.integer(), fc.double(), fc.string()),
      metrics: fc.dictionary(
        fc.oneof(fc.string({ maxLength: 70 }), fc.constantFrom('__proto__', 'constructor', 'temperature')),
        fc.oneof(
          anyJson,
          fc.double(),
          fc.record({ value: fc.oneof(fc.double(), anyJson), unit: fc.string() }),
        ),
        { maxKeys: 300 },
      ),
    },
    { requiredKeys: [] },
  );

  it('never throws, and everything accepted satisfies the contract', () => {
    fc.assert(
      fc.property(fc.oneof(anyJson, plausible, fc.array(plausible, { maxLength: 5 })), (value) => {
        const text = JSON.stringify(value) ?? 'null';
        const { readings } = parseTelemetryPayload(Buffer.from(text), MAX, MAX_READINGS);
        expect(readings.length).toBeGreaterThan(0);
        for (const r of readings) {
          if (!r.ok) continue;
          expect(r.reading.metrics.length).toBeGreaterThan(0);
          expect(r.reading.metrics.length).toBeLessThanOrEqual(MAX_METRICS_PER_READING);
          for (const m of r.reading.metrics) {
            expect(isMetricName(m.name)).toBe(true);
            expect(Number.isFinite(m.value)).toBe(true);
          }
          if (r.reading.seq !== undefined)
            expect(Number.isSafeInteger(r.reading.seq) && r.reading.seq >= 0).toBe(true);
          if (r.reading.ts !== undefined)
            expect(Number.isFinite(r.reading.ts) && r.reading.ts >= 0).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('reads without zod only what the v1 schema accepts, to the same reading', () => {
    const name = fc.oneof(
      fc.constantFrom(
        'temperature',
        'humidity',
        'p0',
        '__proto__',
        'constructor',
        '',
        '1',
        'a.b',
        'x'.repeat(65),
      ),
      fc.string({ maxLength: 8 }),
    );
    const value = fc.oneof(
      fc.double(),
      fc.integer(),
      fc.boolean(),
      fc.constantFrom(null, '1', Number.NaN, Number.POSITIVE_INFINITY, -0),
      fc.record({ value: fc.double() }),
    );
    const reading = fc.record(
      {
        v: fc.constantFrom(1, 2, '1', null, undefined),
        ts: fc.oneof(
          fc.integer({ min: -5, max: 2e12 }),
          fc.double(),
          fc.constantFrom('2026-01-01T00:00:00Z', null, undefined, -0),
        ),
        seq: fc.oneof(
          fc.integer({ min: -5 }),
          fc.double(),
          fc.constantFrom(2 ** 53, 2 ** 53 - 1, '1', null, undefined),
        ),
        metrics: fc.oneof(
          {
            weight: 4,
            arbitrary: fc.dictionary(
              fc.constantFrom('temperature', 'humidity', 'p0'),
              fc.oneof(fc.double(), fc.boolean()),
              {
                minKeys: 1,
              },
            ),
          },
          fc.dictionary(name, value, { maxKeys: 6 }),
          fc.dictionary(
            fc.constant('m').chain((m) => fc.nat(300).map((i) => `${m}${i}`)),
            fc.double(),
            {
              minKeys: 250,
              maxKeys: 260,
            },
          ),
          fc.constantFrom(null, [], [1], 'x'),
        ),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    );
    let taken = 0;
    fc.assert(
      fc.property(reading, (raw) => {
        const fast = fastReadingV1(raw as Record<string, unknown>);
        if (fast === undefined) return;
        taken++;
        expect(payloadVersionOf(raw)).toBe(1); // {"v": undefined} (CBOR) is no version at all
        const schema = PAYLOAD_VERSIONS[1].schema.safeParse(raw);
        expect(schema.success).toBe(true);
        expect(fast).toStrictEqual(PAYLOAD_VERSIONS[1].upcast(schema.data!));
      }),
      { numRuns: 5000 },
    );
    // The generator reaches the fast path often enough for the comparison to mean something.
    expect(taken).toBeGreaterThan(100);
  });

  it('reads the usual device reading without zod: numbers for ts, seq and values', () => {
    const raw = JSON.parse('{"ts":1765000000000,"seq":7,"metrics":{"temperature":21.5,"on":true}}');
    expect(fastReadingV1(raw)).toStrictEqual({
      ts: 1765000000000,
      seq: 7,
      metrics: [
        { name: 'temperature', value: 21.5 },
        { name: 'on', value: 1 },
      ],
    });
    expect(fastReadingV1({ ...raw, ts: '2026-01-01T00:00:00Z' })).toBeUndefined(); // the schema reads it
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        expect(parseTelemetryPayload(bytes, MAX, MAX_READINGS).readings.length).toBeGreaterThan(0);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('CBOR', () => {
  const cbor = (value: unknown) => parseTelemetryPayload(encode(value), MAX, MAX_READINGS, 'cbor');
  const bytes = (hex: string) => parseTelemetryPayload(Buffer.from(hex, 'hex'), MAX, MAX_READINGS, 'cbor');

  it('reads every payload exactly as its JSON twin', () => {
    const plausible = fc.record(
      {
        v: fc.constantFrom(1, 2, 3, undefined),
        ts: fc.oneof(fc.integer({ min: 0 }), fc.double(), fc.constant('2026-01-01T00:00:00.250Z')),
        seq: fc.oneof(fc.nat(), fc.double()),
        metrics: fc.dictionary(
          fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('__proto__', 'temperature')),
          fc.oneof(
            fc.double(),
            fc.boolean(),
            fc.record({ value: fc.oneof(fc.double(), fc.boolean()), unit: fc.constantFrom('C', 'F', 'kPa') }),
          ),
          { maxKeys: 5 },
        ),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(plausible, fc.array(plausible, { minLength: 1, maxLength: 4 })), (value) => {
        // What JSON can carry (no -0, no NaN): the twins must be of the same payload.
        const text = JSON.stringify(value);
        expect(cbor(JSON.parse(text))).toEqual(parseTelemetryPayload(Buffer.from(text), MAX, MAX_READINGS));
      }),
      { numRuns: 1000 },
    );
  });

  it('takes CBOR’s own date-time as the reading’s ts', () => {
    const ts = Date.UTC(2026, 11, 6, 12, 0, 0, 250);
    expect(cbor({ ts: new Date(ts), metrics: { a: 1 } }).readings[0]).toMatchObject({
      ok: true,
      reading: { ts },
    });
    // Tag 1 (epoch seconds) as a float, as small devices write it: {"ts": 1(…), "metrics": {"a": 1}}.
    const seconds = Buffer.alloc(8);
    seconds.writeDoubleBE(ts / 1000);
    const tagged = `a2627473c1fb${seconds.toString('hex')}676d657472696373a1616101`;
    expect(bytes(tagged).readings[0]).toMatchObject({ ok: true, reading: { ts } });
    expect(cbor({ ts: new Date(Number.NaN), metrics: { a: 1 } }).readings[0]).toMatchObject({
      reason: 'TS_INVALID',
    });
  });

  it('refuses what is not one CBOR item, whatever lengths it claims', () => {
    for (const hex of [
      'a167', // a map whose key never comes
      '0102', // two items
      '9bffffffffffffffff', // an array of 2^64 − 1 items
      '9a7fffffff',
      'bb00000000ffffffff', // a map of 2^32 − 1 pairs
      '7a7fffffff', // a 2 GB string
      '81'.repeat(60_000), // nesting deeper than the stack
      '',
    ])
      expect(bytes(hex).readings[0], hex.slice(0, 20)).toMatchObject({
        reason: 'PAYLOAD_NOT_CBOR',
        index: undefined,
      });
  });

  it('values CBOR has and JSON does not are refused per reading, and a map never sets a prototype', () => {
    expect(cbor({ metrics: { a: Buffer.from([1]) } }).readings[0]).toMatchObject({ reason: 'VALUE_INVALID' });
    expect(cbor({ metrics: { a: 2n ** 64n } }).readings[0]).toMatchObject({ reason: 'VALUE_INVALID' });
    expect(cbor({ metrics: { a: Number.NaN } }).readings[0]).toMatchObject({ reason: 'VALUE_INVALID' });
    // {"metrics": {"__proto__": {"polluted": 1}}}: refused by name, as its JSON twin is.
    const r = bytes('a1676d657472696373a1695f5f70726f746f5f5fa168706f6c6c757465640a');
    expect(r.readings[0]).toMatchObject({ reason: 'METRIC_NAME_INVALID' });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // A map with an integer key has no JSON twin.
    expect(bytes('a10102').readings[0]).toMatchObject({ reason: 'PAYLOAD_NOT_CBOR' });
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (b) => {
        expect(parseTelemetryPayload(b, MAX, MAX_READINGS, 'cbor').readings.length).toBeGreaterThan(0);
      }),
      { numRuns: 2000 },
    );
  });
});
