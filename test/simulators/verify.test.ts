import { describe, expect, it } from 'vitest';
import type { OutMessage } from '../../simulators/device-script.js';
import { type Ledger, LedgerBook } from '../../simulators/ledger.js';
import { encodeReading } from '../../simulators/payloads.js';
import { type AggPoint, compareLedger, formatReport, type RawPoint } from '../../simulators/verify.js';

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);
const S = 1_000;

/** Device a: temperature 10, 11, 12 in [T0, T0+10s) and 20 in [T0+10s, …); device b: 5. */
function ledger(invalid: Record<string, number> = {}): Ledger {
  const book = new LedgerBook();
  book.addDevice('run-a', 'thermometer', {});
  book.addDevice('run-b', 'thermometer', {});
  const ack = (device: string, ts: number, seq: number, temperature: number) => {
    const r = encodeReading({ ts, seq, values: { temperature } }, 1);
    const m: OutMessage = {
      kind: 'data',
      payload: r.json,
      encoding: 'json',
      readings: [r],
      duplicate: false,
      swapped: false,
    };
    book.sent(device, m);
    book.acked(device, m);
  };
  ack('run-a', T0 + 1 * S, 0, 10);
  ack('run-a', T0 + 2 * S, 1, 11);
  ack('run-a', T0 + 3 * S, 2, 12);
  ack('run-a', T0 + 11 * S, 3, 20);
  ack('run-b', T0 + 4 * S, 0, 5);
  for (const [reason, n] of Object.entries(invalid)) {
    for (let i = 0; i < n; i++) {
      const m: OutMessage = {
        kind: 'invalid',
        payload: '{',
        encoding: 'json',
        readings: [],
        reason: reason as 'PAYLOAD_NOT_JSON',
        duplicate: false,
        swapped: false,
      };
      book.sent('run-b', m);
      book.acked('run-b', m);
    }
  }
  return book.ledger(
    {
      runId: 'run',
      tenant: 'run',
      devicePrefix: 'run-',
      seed: 1,
      auth: 'registry',
      qos: 1,
      promised: true,
      startedAt: new Date(T0).toISOString(),
      endedAt: new Date(T0 + 60 * S).toISOString(),
      options: {},
    },
    0,
  );
}

const raw = (): RawPoint[] => [
  { device: 'run-a', metric: 'temperature', ts: T0 + 1 * S, value: 10 },
  { device: 'run-a', metric: 'temperature', ts: T0 + 2 * S, value: 11 },
  { device: 'run-a', metric: 'temperature', ts: T0 + 3 * S, value: 12 },
  { device: 'run-a', metric: 'temperature', ts: T0 + 11 * S, value: 20 },
  { device: 'run-b', metric: 'temperature', ts: T0 + 4 * S, value: 5 },
];

function aggRow(
  device: string,
  start: number,
  v: { count: number; sum: number; min: number; max: number },
): AggPoint[] {
  const mean = v.sum / v.count;
  return (['count', 'sum', 'min', 'max', 'mean'] as const).map((field) => ({
    device,
    metric: 'temperature',
    start,
    field,
    value: field === 'mean' ? mean : v[field],
  }));
}

const agg = (): AggPoint[] => [
  ...aggRow('run-a', T0, { count: 3, sum: 33, min: 10, max: 12 }),
  ...aggRow('run-a', T0 + 10 * S, { count: 1, sum: 20, min: 20, max: 20 }),
  ...aggRow('run-b', T0, { count: 1, sum: 5, min: 5, max: 5 }),
];

describe('compareLedger', () => {
  it('is exact when the TSDB holds what was acknowledged', () => {
    const report = compareLedger(ledger(), { raw: raw(), agg: agg() });
    expect(report.differences).toEqual([]);
    expect(report.exact).toBe(true);
    expect(report.raw).toMatchObject({ expectedWindows: 3, exact: 3, expectedReadings: 5, foundReadings: 5 });
    expect(report.agg).toMatchObject({ expectedWindows: 3, exact: 3 });
  });

  it('treats replayed samples (same series, time and value) as one, and reports conflicting values', () => {
    const replayed = [...raw(), ...raw().slice(0, 2)];
    const report = compareLedger(ledger(), { raw: replayed, agg: agg() });
    expect(report.exact).toBe(true);
    expect(report.raw.replayed).toBe(2);
    const conflict = [...raw(), { device: 'run-a', metric: 'temperature', ts: T0 + 2 * S, value: 99 }];
    const r2 = compareLedger(ledger(), { raw: conflict, agg: agg() });
    expect(r2.exact).toBe(false);
    expect(r2.differences).toEqual([
      {
        source: 'raw',
        kind: 'conflict',
        device: 'run-a',
        metric: 'temperature',
        at: T0 + 2 * S,
        expected: 11,
        found: 99,
      },
    ]);
  });

  it('reports a reading missing from a window, and a whole device missing', () => {
    const report = compareLedger(ledger(), { raw: raw().filter((p) => p.ts !== T0 + 2 * S), agg: agg() });
    // 10 and 12 are left: same min, max and mean, one reading short.
    expect(report.differences).toEqual([
      { source: 'raw', kind: 'count', device: 'run-a', metric: 'temperature', at: T0, expected: 3, found: 2 },
    ]);
    const noB = compareLedger(ledger(), { raw: raw().filter((p) => p.device !== 'run-b'), agg: agg() });
    expect(noB.differences).toEqual([
      { source: 'raw', kind: 'missing-device', device: 'run-b', expected: '1 readings', found: 0 },
    ]);
    expect(noB.raw.missing).toBe(1);
  });

  it('reports extra readings, windows and devices (duplicated or invalid data stored)', () => {
    const extra: RawPoint[] = [
      ...raw(),
      { device: 'run-a', metric: 'temperature', ts: T0 + 5 * S, value: 12 },
      { device: 'run-a', metric: 'temperature', ts: T0 + 3_600 * S, value: 21.5 },
      { device: 'run-z', metric: 'temperature', ts: T0, value: 1 },
    ];
    const report = compareLedger(ledger(), { raw: extra, agg: agg() });
    expect(report.differences.map((d) => [d.kind, d.device, d.at])).toEqual([
      ['count', 'run-a', T0],
      ['mean', 'run-a', T0],
      ['extra-device', 'run-z', undefined],
      ['extra-window', 'run-a', T0 + 3_600 * S],
    ]);
  });

  it('picks the latest emission of a window among VictoriaMetrics’ kept writes', () => {
    // On time with two readings, then corrected to three: both rows stored under the same time.
    const emissions = [...aggRow('run-a', T0, { count: 2, sum: 21, min: 10, max: 11 }), ...agg()];
    expect(compareLedger(ledger(), { raw: raw(), agg: emissions }).exact).toBe(true);
    // Only the on-time emission: the correction never arrived.
    const stale = [
      ...aggRow('run-a', T0, { count: 2, sum: 21, min: 10, max: 11 }),
      ...agg().filter((p) => !(p.device === 'run-a' && p.start === T0)),
    ];
    const report = compareLedger(ledger(), { raw: raw(), agg: stale });
    expect(report.differences.map((d) => [d.source, d.kind, d.expected, d.found])).toEqual([
      ['agg', 'count', 3, 2],
      ['agg', 'max', 12, 11],
      ['agg', 'sum', 33, 21],
      ['agg', 'mean', 11, 10.5],
    ]);
  });

  it('tolerates floating-point order effects, not real differences', () => {
    const values = [0.1, 0.2, 0.3];
    const near = agg().map((p) =>
      p.field === 'sum' && p.start === T0 && p.device === 'run-a' ? { ...p, value: 33 + 1e-12 } : p,
    );
    expect(compareLedger(ledger(), { raw: raw(), agg: near }).exact).toBe(true);
    const off = agg().map((p) =>
      p.field === 'sum' && p.start === T0 && p.device === 'run-a' ? { ...p, value: 33.001 } : p,
    );
    expect(compareLedger(ledger(), { raw: raw(), agg: off }).exact).toBe(false);
    expect(values.reduce((a, b) => a + b)).not.toBe(0.6); // why there is a tolerance at all
  });

  it('needs at least the invalid messages in DEADLETTER, by reason, and no reason it did not provoke', () => {
    const l = ledger({ PAYLOAD_NOT_JSON: 2, VALUE_INVALID: 1 });
    expect(
      compareLedger(l, { raw: raw(), agg: agg(), deadLetters: { PAYLOAD_NOT_JSON: 3, VALUE_INVALID: 1 } })
        .exact,
    ).toBe(true);
    const report = compareLedger(l, {
      raw: raw(),
      agg: agg(),
      deadLetters: { PAYLOAD_NOT_JSON: 1, UNIT_MISMATCH: 4 },
    });
    expect(report.differences.map((d) => [d.metric, d.expected, d.found])).toEqual([
      ['PAYLOAD_NOT_JSON', 2, 1],
      ['VALUE_INVALID', 1, 0],
      ['UNIT_MISMATCH', 0, 4],
    ]);
    expect(report.deadLetters?.exact).toBe(false);
  });

  it('formats a readable report with the first differences', () => {
    const l = ledger();
    const report = compareLedger(l, { raw: raw().filter((p) => p.device !== 'run-b'), agg: agg() });
    const text = formatReport(l, report, { tsdb: 'victoria', url: 'http://vm', rows: 10 });
    expect(text).toContain('raw telemetry       3 windows expected: 2 exact, 1 missing');
    expect(text).toMatch(/raw\s+missing-device\s+run-b/);
    expect(text).toMatch(/DIFFERENT: 1 differences$/);
    expect(
      formatReport(l, compareLedger(l, { raw: raw(), agg: agg() }), { tsdb: 'v', url: 'u', rows: 5 }),
    ).toMatch(/^EXACT/m);
  });
});
