import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeDeviceWindowBatch, isDeviceWindowBatch } from '../../contract/decode-device-window-batch.js';
import { DeviceWindowBatch } from '../../contract/event.js';
import { deviceWindow } from '../../processors/effects.js';

/** What a partition consumer publishes (effects.ts deviceWindow). */
const WINDOW = deviceWindow({
  tenant: 'acme',
  deviceId: 'dev-1',
  metric: 'temperature',
  windowMs: 10_000,
  startMs: 1_764_331_200_000,
  values: {
    count: 5,
    sum: 105.5,
    min: 20.1,
    max: 21.4,
    mean: 21.1,
    last: 21,
    stddev: 0.5,
    p50: 21,
    p95: 21.4,
    p99: 21.4,
  },
  final: false,
  labels: { type: 'thermometer', site: 'x', other: 'dropped' },
}) as unknown as Record<string, unknown>;

function expectSameVerdict(json: string): void {
  let schemaOk: boolean;
  try {
    schemaOk = DeviceWindowBatch.safeParse(JSON.parse(json)).success;
  } catch {
    schemaOk = false;
  }
  const decoded = decodeDeviceWindowBatch(json);
  expect(decoded !== undefined, json).toBe(schemaOk);
  expect(decodeDeviceWindowBatch(Buffer.from(json)) !== undefined, json).toBe(schemaOk);
  if (decoded) expect(DeviceWindowBatch.parse(decoded)).toEqual(DeviceWindowBatch.parse(JSON.parse(json)));
}

const one = (patch: Record<string, unknown>) => JSON.stringify([WINDOW, { ...WINDOW, ...patch }]);

const MUTATIONS: Array<[string, string]> = [
  ['as published', JSON.stringify([WINDOW])],
  ['empty', '[]'],
  ['not an array', JSON.stringify(WINDOW)],
  ['an array holding null', '[null]'],
  ['an array holding an array', JSON.stringify([[WINDOW]])],
  ...Object.keys(WINDOW).map((key) => {
    const copy = { ...WINDOW };
    delete copy[key];
    return [`without ${key}`, JSON.stringify([WINDOW, copy])] as [string, string];
  }),
  ['windowMs 0', one({ windowMs: 0 })],
  ['windowMs fractional', one({ windowMs: 1.5 })],
  ['startMs negative (accepted)', one({ startMs: -10_000 })],
  ['startMs fractional', one({ startMs: 0.5 })],
  ['count 0', one({ count: 0 })],
  ['count a string', one({ count: '5' })],
  ['sum null', one({ sum: null })],
  ['mean Infinity', one({ mean: 1 }).replace('"mean":1', '"mean":1e999')],
  ['final a number', one({ final: 1 })],
  ['labels a number value', one({ labels: { type: 1 } })],
  ['labels an array', one({ labels: [] })],
  ['labels __proto__', one({}).replace('"labels":{', '"labels":{"__proto__":"x",')],
  ['an extra key (accepted)', one({ extra: [1] })],
  ['not JSON', '[{'],
];

describe('decodeDeviceWindowBatch', () => {
  it.each(MUTATIONS)('accepts and rejects as the zod schema does: %s', (_, json) => expectSameVerdict(json));

  it('takes the hand-checked path for what the processors publish', () => {
    expect(isDeviceWindowBatch(JSON.parse(JSON.stringify([WINDOW, { ...WINDOW, final: true }])))).toBe(true);
  });

  it('agrees with the schema on arbitrary values in place of each field', () => {
    fc.assert(
      fc.property(fc.constantFrom(...Object.keys(WINDOW)), fc.jsonValue(), (key, value) => {
        expectSameVerdict(one({ [key]: value }));
      }),
      { numRuns: 1_000 },
    );
  });
});
