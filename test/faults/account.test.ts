import { expect, it } from 'vitest';
import type { Ledger, VerifyResult } from '../../simulators/index.js';
import type { Difference } from '../../simulators/verify.js';
import { account, type StreamTally } from './kit/drill.js';

/**
 * The drills' accounting, on made-up inputs: a drill line that says 0 lost and 0 duplicated must
 * mean it, so each kind of damage is shown to be counted.
 */
const W = 10_000;
const SEP = '\u0000';

/** Two devices, two metrics each; d1 has 3 readings in window 0 and 2 in window W, d2 4 in window 0. */
function ledger(): Ledger {
  const windows = [
    ['d1', 'temperature', 0, 3],
    ['d1', 'battery', 0, 3],
    ['d1', 'temperature', W, 2],
    ['d1', 'battery', W, 2],
    ['d2', 'power', 0, 4],
    ['d2', 'energy', 0, 4],
  ].map(([device, metric, start, count]) => ({
    type: 'window',
    device,
    metric,
    start,
    count,
    sum: 0,
    min: 0,
    max: 0,
  }));
  return {
    header: { tenant: 't', windowMs: W },
    devices: [
      { device: 'd1', readings: 5 },
      { device: 'd2', readings: 4 },
    ],
    windows,
    totals: { sent: 11, duplicatesSent: 2, invalidSent: {}, readings: 9 },
  } as unknown as Ledger;
}

function stream(overrides: Record<string, [distinct: number, copies: number]> = {}): StreamTally {
  const counts: Record<string, [number, number]> = { 'd1@0': [3, 3], [`d1@${W}`]: [2, 2], 'd2@0': [4, 4] };
  const distinct = new Map<string, number>();
  const copies = new Map<string, number>();
  for (const [k, [d, c]] of Object.entries({ ...counts, ...overrides })) {
    const [device, start] = k.split('@') as [string, string];
    distinct.set(`${device}${SEP}${start}`, d);
    copies.set(`${device}${SEP}${start}`, c);
  }
  return { distinct, copies, events: 0 };
}

const verified = (differences: Partial<Difference>[] = []) =>
  ({ report: { differences } }) as unknown as VerifyResult;

it('counts an exact run as exact', () => {
  expect(account('x', ledger(), stream(), verified())).toEqual({
    drill: 'x',
    sent: 9,
    acked: 9,
    stored: 9,
    aggregated: 9,
    lost: 0,
    duplicated: 0,
  });
});

it('counts a reading missing from the stream as lost', () => {
  const r = account('x', ledger(), stream({ 'd1@0': [2, 2] }), verified());
  expect(r).toMatchObject({ stored: 8, aggregated: 9, lost: 1, duplicated: 0 });
});

it('counts a reading stored twice, or stored beyond what was acknowledged, as duplicated', () => {
  expect(account('x', ledger(), stream({ 'd1@0': [3, 4] }), verified())).toMatchObject({
    stored: 9,
    lost: 0,
    duplicated: 1,
  });
  expect(account('x', ledger(), stream({ 'd3@0': [2, 2] }), verified())).toMatchObject({
    stored: 9,
    duplicated: 2,
  });
});

it('counts what verify found missing or over-counted in the aggregates, metric by metric', () => {
  const fewer = verified([
    { source: 'agg', kind: 'count', device: 'd1', metric: 'battery', at: 0, found: 1 },
  ]);
  expect(account('x', ledger(), stream(), fewer)).toMatchObject({ aggregated: 7, lost: 2, duplicated: 0 });
  const more = verified([{ source: 'agg', kind: 'count', device: 'd2', metric: 'power', at: 0, found: 5 }]);
  expect(account('x', ledger(), stream(), more)).toMatchObject({ aggregated: 9, lost: 0, duplicated: 1 });
  const gone = verified([
    { source: 'agg', kind: 'missing-window', device: 'd1', metric: 'temperature', at: W, found: 0 },
    { source: 'agg', kind: 'missing-device', device: 'd2', found: 0 },
  ]);
  expect(account('x', ledger(), stream(), gone)).toMatchObject({ aggregated: 3, lost: 6 });
  const extra = verified([
    { source: 'agg', kind: 'extra-window', device: 'd1', metric: 'temperature', at: 2 * W, found: 2 },
  ]);
  expect(account('x', ledger(), stream(), extra)).toMatchObject({ lost: 0, duplicated: 2 });
  // Raw and dead-letter differences are verify's to fail on, not readings lost from the aggregates.
  const raw = verified([{ source: 'raw', kind: 'count', device: 'd1', metric: 'battery', at: 0, found: 1 }]);
  expect(account('x', ledger(), stream(), raw)).toMatchObject({ aggregated: 9, lost: 0 });
});
