import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCanonicalEvent, fastCanonicalEventTs } from '../../contract/decode-canonical-event.js';
import { CanonicalEvent } from '../../contract/event.js';
import { normaliseReading } from '../../gateway/ingest/normalise.js';

/** What the gateway writes: its own normaliseReading, as telemetry-handler.ts publishes it. */
function gatewayEvent(tsMs: number, seq: number | undefined, unit = 'degF'): Record<string, unknown> {
  const result = normaliseReading(
    {
      ts: tsMs,
      ...(seq === undefined ? {} : { seq }),
      metrics: [
        { name: 'temperature', value: 70.1, unit },
        { name: 'humidity', value: 41, unit: '%' },
      ],
    },
    2,
    0,
    {
      tenant: 'acme',
      deviceId: 'dev-1',
      labels: { type: 'thermometer', site: 'x' },
      receivedAtMs: tsMs + 12,
      receivedAtIso: new Date(tsMs + 12).toISOString(),
      publishName: () => 'n1',
      deduplicate: true,
      maxFutureMs: Number.MAX_SAFE_INTEGER,
      maxAgeMs: Number.MAX_SAFE_INTEGER,
    },
  );
  if (!result.ok) throw new Error(result.detail);
  return JSON.parse(JSON.stringify(result.event)) as Record<string, unknown>;
}

const BASE = gatewayEvent(Date.UTC(2026, 10, 28, 12, 0, 0, 0), 43);

/** Accepted by the schema, rejected, and decoded: the three must agree. */
function expectSameVerdict(json: string): void {
  let schemaOk: boolean;
  try {
    schemaOk = CanonicalEvent.safeParse(JSON.parse(json)).success;
  } catch {
    schemaOk = false;
  }
  const decoded = decodeCanonicalEvent(json);
  expect(decoded !== undefined, json).toBe(schemaOk);
  expect(decodeCanonicalEvent(Buffer.from(json)) !== undefined, json).toBe(schemaOk);
  if (decoded) {
    const data = CanonicalEvent.parse(JSON.parse(json));
    expect(decoded.tsMs).toBe(Date.parse(data.ts));
    // The same event, less the keys the schema strips.
    const { tsMs: _, ...event } = decoded;
    expect(CanonicalEvent.parse(event)).toEqual(data);
  }
}

const with_ = (patch: Record<string, unknown>) => JSON.stringify({ ...BASE, ...patch });
const without = (key: string) => {
  const copy = { ...BASE };
  delete copy[key];
  return JSON.stringify(copy);
};
const metric = (m: unknown) => with_({ metrics: { temperature: m } });

const MUTATIONS: Array<[string, string]> = [
  ['as the gateway writes it', JSON.stringify(BASE)],
  ['without seq', without('seq')],
  ...['id', 'tenant', 'deviceId', 'ts', 'receivedAt', 'schemaVersion', 'metrics', 'labels'].map(
    (key) => [`without ${key}`, without(key)] as [string, string],
  ),
  ['id a number', with_({ id: 1 })],
  ['tenant null', with_({ tenant: null })],
  ['deviceId an object', with_({ deviceId: {} })],
  ['ts a number', with_({ ts: 1764331200000 })],
  ['ts a date only', with_({ ts: '2026-11-28' })],
  ['ts without fraction (accepted)', with_({ ts: '2026-11-28T12:00:00Z' })],
  ['ts with microseconds (accepted)', with_({ ts: '2026-11-28T12:00:00.123456Z' })],
  ['ts with an offset', with_({ ts: '2026-11-28T12:00:00.000+01:00' })],
  ['ts without zone', with_({ ts: '2026-11-28T12:00:00.000' })],
  ['ts lower-case z', with_({ ts: '2026-11-28T12:00:00.000z' })],
  ['ts with a space', with_({ ts: '2026-11-28 12:00:00.000Z' })],
  ['ts 29 February of a leap year', with_({ ts: '2028-02-29T00:00:00.000Z' })],
  ['ts 29 February of 2000', with_({ ts: '2000-02-29T00:00:00.000Z' })],
  ['ts 29 February of a common year', with_({ ts: '2026-02-29T00:00:00.000Z' })],
  ['ts 29 February of 2100', with_({ ts: '2100-02-29T00:00:00.000Z' })],
  ['ts 31 April', with_({ ts: '2026-04-31T00:00:00.000Z' })],
  ['ts month 13', with_({ ts: '2026-13-01T00:00:00.000Z' })],
  ['ts month 00', with_({ ts: '2026-00-01T00:00:00.000Z' })],
  ['ts day 00', with_({ ts: '2026-01-00T00:00:00.000Z' })],
  ['ts hour 24', with_({ ts: '2026-01-01T24:00:00.000Z' })],
  ['ts minute 60', with_({ ts: '2026-01-01T23:60:00.000Z' })],
  ['ts second 60', with_({ ts: '2026-01-01T23:59:60.000Z' })],
  ['ts year 0050 (accepted)', with_({ ts: '0050-06-01T00:00:00.000Z' })],
  ['ts year 1969', with_({ ts: '1969-12-31T23:59:59.999Z' })],
  ['ts with a non-digit', with_({ ts: '2026-1a-01T00:00:00.000Z' })],
  ['ts with a sign', with_({ ts: '+2026-01-01T00:00:00.000Z' })],
  ['receivedAt not a date', with_({ receivedAt: 'yesterday' })],
  ['receivedAt 31 June', with_({ receivedAt: '2026-06-31T00:00:00.000Z' })],
  ['seq 0', with_({ seq: 0 })],
  ['seq negative', with_({ seq: -1 })],
  ['seq fractional', with_({ seq: 1.5 })],
  ['seq a string', with_({ seq: '1' })],
  ['seq null', with_({ seq: null })],
  ['seq above 2^53', with_({ seq: 2 ** 53 })],
  ['schemaVersion 0', with_({ schemaVersion: 0 })],
  ['schemaVersion negative', with_({ schemaVersion: -1 })],
  ['schemaVersion fractional', with_({ schemaVersion: 1.5 })],
  ['schemaVersion a string', with_({ schemaVersion: '2' })],
  ['metrics empty (accepted)', with_({ metrics: {} })],
  ['metrics an array', with_({ metrics: [] })],
  ['metrics null', with_({ metrics: null })],
  ['metrics a string', with_({ metrics: 'temperature' })],
  ['metric a bare number', metric(21)],
  ['metric null', metric(null)],
  ['metric an array', metric([21, 'degC'])],
  ['metric value a string', metric({ value: '21', unit: 'degC' })],
  ['metric value null', metric({ value: null, unit: 'degC' })],
  ['metric value nested', metric({ value: { value: 21 }, unit: 'degC' })],
  ['metric without unit', metric({ value: 21 })],
  ['metric unit a number', metric({ value: 21, unit: 1 })],
  ['metric originalUnit a number', metric({ value: 21, unit: 'degC', originalUnit: 5 })],
  ['metric originalUnit null', metric({ value: 21, unit: 'degC', originalUnit: null })],
  ['metric with an extra key (accepted)', metric({ value: 21, unit: 'degC', extra: true })],
  ['metric value 1e999 (Infinity)', JSON.stringify(BASE).replace('21.166666666666664', '1e999')],
  ['metric value -1e999', JSON.stringify(BASE).replace('21.166666666666664', '-1e999')],
  ['metric value -0 (accepted)', JSON.stringify(BASE).replace('21.166666666666664', '-0')],
  ['labels a number value', with_({ labels: { type: 1 } })],
  ['labels nested', with_({ labels: { type: { a: 'b' } } })],
  ['labels an array', with_({ labels: ['thermometer'] })],
  ['labels null', with_({ labels: null })],
  ['labels empty (accepted)', with_({ labels: {} })],
  ['an extra top-level key (accepted)', with_({ extra: { deeply: [1, 2] } })],
  ['__proto__ among labels', JSON.stringify(BASE).replace('"labels":{', '"labels":{"__proto__":"x",')],
  [
    '__proto__ among metrics',
    JSON.stringify(BASE).replace('"metrics":{', '"metrics":{"__proto__":{"value":1,"unit":""},'),
  ],
  [
    '__proto__ inside a metric (accepted, stripped by the schema)',
    JSON.stringify(BASE).replace('"temperature":{', '"temperature":{"__proto__":{"value":"x"},'),
  ],
  ['__proto__ at the top', `{"__proto__":{"a":1},${JSON.stringify(BASE).slice(1)}`],
  ['an array', JSON.stringify([BASE])],
  ['null', 'null'],
  ['a number', '42'],
  ['a string', JSON.stringify(JSON.stringify(BASE))],
  ['not JSON', '{"id":'],
  ['empty', ''],
];

describe('decodeCanonicalEvent', () => {
  it.each(MUTATIONS)('accepts and rejects as the zod schema does: %s', (_, json) => {
    expectSameVerdict(json);
  });

  it('takes the hand-checked path for what the gateway writes, with or without seq and originalUnit', () => {
    for (const e of [
      BASE,
      gatewayEvent(0, undefined),
      gatewayEvent(Date.UTC(2099, 11, 31, 23, 59, 59, 999), 0, 'degC'),
    ]) {
      expect(fastCanonicalEventTs(e)).toBe(Date.parse(e.ts as string));
      const decoded = decodeCanonicalEvent(JSON.stringify(e));
      expect(decoded).toMatchObject(e);
    }
  });

  it('decodes the event time as Date.parse does, over every date the gateway can write', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(100, 0, 1), max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) }),
        (ms) => {
          const json = with_({ ts: new Date(ms).toISOString() });
          const decoded = decodeCanonicalEvent(json);
          expect(decoded?.tsMs).toBe(ms);
          expect(fastCanonicalEventTs(JSON.parse(json))).toBe(ms);
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('agrees with the schema on dates of every shape, valid or not', () => {
    const two = fc.integer({ min: 0, max: 99 }).map((n) => String(n).padStart(2, '0'));
    const date = fc
      .tuple(fc.integer({ min: 0, max: 9999 }), two, two, two, two, two, fc.integer({ min: 0, max: 999 }))
      .map(
        ([y, mo, d, h, mi, s, ms]) =>
          `${String(y).padStart(4, '0')}-${mo}-${d}T${h}:${mi}:${s}.${String(ms).padStart(3, '0')}Z`,
      );
    fc.assert(
      fc.property(date, (ts) => expectSameVerdict(with_({ ts }))),
      { numRuns: 2_000 },
    );
  });

  it('agrees with the schema on arbitrary values in place of each field', () => {
    const keys = [
      'id',
      'tenant',
      'deviceId',
      'ts',
      'receivedAt',
      'seq',
      'schemaVersion',
      'metrics',
      'labels',
    ];
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.jsonValue(), (key, value) => {
        expectSameVerdict(with_({ [key]: value }));
        expectSameVerdict(metric(value));
        expectSameVerdict(metric({ value, unit: 'degC' }));
        expectSameVerdict(with_({ labels: { type: value } }));
      }),
      { numRuns: 1_000 },
    );
  });
});
