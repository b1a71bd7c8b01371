import type { Ledger, WindowStats } from './ledger.js';
import { windowStart } from './ledger.js';

/**
 * The comparison behind `simulate verify`: a ledger against what a TSDB holds. Pure: the readers
 * (tsdb-readers.ts, deadletters.ts) fetch, this decides.
 *
 * Per device, metric and 10 s window, two things are checked:
 * - raw `telemetry`: count, min, max and mean of the stored samples. Samples with the same series,
 *   timestamp and value are one (InfluxDB keeps one; VictoriaMetrics keeps each write, and a replay
 *   after a processor restart writes them again); two values at one series and timestamp are a
 *   conflict.
 * - `telemetry_agg` with window=10s: each emission of a window (on time, corrected, final) is
 *   written under the same series and time. InfluxDB keeps the last; VictoriaMetrics keeps all, and
 *   corrections only ever add readings, so the last emission is the one with the largest count and
 *   the smallest min and largest max. Its sum and mean cannot be picked out the same way (other
 *   emissions share the timestamp), so they match when one of the stored values equals the
 *   expected one.
 * And DEADLETTER must hold at least the invalid messages the ledger counted, per reason code.
 */
export const AGG_FIELDS = ['count', 'sum', 'min', 'max', 'mean'] as const;
export type AggField = (typeof AGG_FIELDS)[number];

export interface RawPoint {
  device: string;
  metric: string;
  ts: number;
  value: number;
}

export interface AggPoint {
  device: string;
  metric: string;
  start: number;
  field: AggField;
  value: number;
}

export interface Observed {
  raw: readonly RawPoint[];
  agg: readonly AggPoint[];
  /** Dead letters of the run by reason; undefined when not checked. */
  deadLetters?: Readonly<Record<string, number>>;
}

export type DiffKind =
  | 'missing-device'
  | 'extra-device'
  | 'missing-window'
  | 'extra-window'
  | 'count'
  | 'min'
  | 'max'
  | 'mean'
  | 'sum'
  | 'conflict'
  | 'deadletters';

export interface Difference {
  source: 'raw' | 'agg' | 'deadletter';
  kind: DiffKind;
  device?: string;
  metric?: string;
  /** Window start (epoch ms), or the sample time for a conflict. */
  at?: number;
  expected: number | string;
  found: number | string;
}

export interface SourceTotals {
  expectedWindows: number;
  exact: number;
  missing: number;
  extra: number;
  mismatched: number;
}

export interface VerifyReport {
  exact: boolean;
  /** False at QoS 0: differences are reported, not failed. */
  promised: boolean;
  /** Readings here are values: one per metric of a reading. */
  raw: SourceTotals & {
    expectedReadings: number;
    foundReadings: number;
    replayed: number;
    conflicts: number;
  };
  agg: SourceTotals;
  deadLetters:
    | { expected: Record<string, number>; found: Record<string, number>; exact: boolean }
    | undefined;
  differences: Difference[];
  byKind: Partial<Record<DiffKind, number>>;
}

/**
 * Equal within 1e-9 relative: the processors add a window's values in arrival order, the ledger in
 * acknowledgement order, and floating-point sums depend on order in their last bits; VictoriaMetrics
 * also stores values as decimals of limited precision. Counts are compared exactly.
 */
export const RELATIVE_TOLERANCE = 1e-9;

export function approxEqual(a: number, b: number): boolean {
  return Math.abs(a - b) <= RELATIVE_TOLERANCE * Math.max(1, Math.abs(a), Math.abs(b));
}

const SEP = '\u0000';
const keyOf = (device: string, metric: string, start: number) => `${device}${SEP}${metric}${SEP}${start}`;

function splitKey(key: string): { device: string; metric: string; start: number } {
  const [device, metric, start] = key.split(SEP) as [string, string, string];
  return { device, metric, start: Number(start) };
}

function emptyTotals(expectedWindows: number): SourceTotals {
  return { expectedWindows, exact: 0, missing: 0, extra: 0, mismatched: 0 };
}

interface Found {
  count: number;
  min: number;
  max: number;
  /** Candidate values: one with InfluxDB, every emission's with VictoriaMetrics. */
  sums: number[];
  means: number[];
}

/** Raw samples → windows, one sample per series and timestamp; conflicts and replays counted. */
function rawWindows(
  raw: readonly RawPoint[],
  windowMs: number,
  differences: Difference[],
): { windows: Map<string, Found>; replayed: number; conflicts: number; readings: number } {
  const seen = new Map<string, number>();
  let replayed = 0;
  let conflicts = 0;
  const windows = new Map<string, Found>();
  const conflicted = new Set<string>();
  for (const p of raw) {
    const sampleKey = keyOf(p.device, p.metric, p.ts);
    const earlier = seen.get(sampleKey);
    if (earlier !== undefined) {
      if (earlier === p.value || approxEqual(earlier, p.value)) replayed++;
      else if (!conflicted.has(sampleKey)) {
        conflicted.add(sampleKey);
        conflicts++;
        differences.push({
          source: 'raw',
          kind: 'conflict',
          device: p.device,
          metric: p.metric,
          at: p.ts,
          expected: earlier,
          found: p.value,
        });
      }
      continue;
    }
    seen.set(sampleKey, p.value);
    const key = keyOf(p.device, p.metric, windowStart(p.ts, windowMs));
    const w = windows.get(key);
    if (w === undefined)
      windows.set(key, { count: 1, min: p.value, max: p.value, sums: [p.value], means: [] });
    else {
      w.count++;
      w.sums[0]! += p.value;
      if (p.value < w.min) w.min = p.value;
      if (p.value > w.max) w.max = p.value;
    }
  }
  for (const w of windows.values()) w.means = [w.sums[0]! / w.count];
  return { windows, replayed, conflicts, readings: seen.size };
}

function aggWindows(agg: readonly AggPoint[]): Map<string, Found> {
  const windows = new Map<string, Found>();
  for (const p of agg) {
    const key = keyOf(p.device, p.metric, p.start);
    let w = windows.get(key);
    if (w === undefined) {
      w = { count: 0, min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY, sums: [], means: [] };
      windows.set(key, w);
    }
    switch (p.field) {
      case 'count':
        w.count = Math.max(w.count, p.value);
        break;
      case 'min':
        w.min = Math.min(w.min, p.value);
        break;
      case 'max':
        w.max = Math.max(w.max, p.value);
        break;
      case 'sum':
        w.sums.push(p.value);
        break;
      case 'mean':
        w.means.push(p.value);
        break;
    }
  }
  return windows;
}

function closest(candidates: readonly number[], expected: number): number | string {
  if (candidates.length === 0) return '–';
  return candidates.reduce((best, v) => (Math.abs(v - expected) < Math.abs(best - expected) ? v : best));
}

function compareSource(
  source: 'raw' | 'agg',
  expected: ReadonlyMap<string, WindowStats>,
  found: ReadonlyMap<string, Found>,
  expectedReadingsByDevice: ReadonlyMap<string, number>,
  differences: Difference[],
): SourceTotals {
  const totals = emptyTotals(expected.size);
  const devicesFound = new Set<string>();
  for (const key of found.keys()) devicesFound.add(splitKey(key).device);
  const missingDevices = new Set<string>();
  for (const [device, readings] of expectedReadingsByDevice) {
    if (readings > 0 && !devicesFound.has(device)) {
      missingDevices.add(device);
      differences.push({
        source,
        kind: 'missing-device',
        device,
        expected: `${readings} readings`,
        found: 0,
      });
    }
  }
  for (const [key, want] of expected) {
    const { device, metric, start } = splitKey(key);
    const got = found.get(key);
    if (got === undefined) {
      totals.missing++;
      if (!missingDevices.has(device))
        differences.push({
          source,
          kind: 'missing-window',
          device,
          metric,
          at: start,
          expected: want.count,
          found: 0,
        });
      continue;
    }
    const mean = want.sum / want.count;
    const diffs: Difference[] = [];
    const at = { source, device, metric, at: start };
    if (got.count !== want.count)
      diffs.push({ ...at, kind: 'count', expected: want.count, found: got.count });
    if (!approxEqual(got.min, want.min))
      diffs.push({ ...at, kind: 'min', expected: want.min, found: got.min });
    if (!approxEqual(got.max, want.max))
      diffs.push({ ...at, kind: 'max', expected: want.max, found: got.max });
    if (source === 'agg' && !got.sums.some((s) => approxEqual(s, want.sum)))
      diffs.push({ ...at, kind: 'sum', expected: want.sum, found: closest(got.sums, want.sum) });
    if (!got.means.some((m) => approxEqual(m, mean)))
      diffs.push({ ...at, kind: 'mean', expected: mean, found: closest(got.means, mean) });
    if (diffs.length === 0) totals.exact++;
    else {
      totals.mismatched++;
      differences.push(...diffs);
    }
  }
  const extraDevices = new Set<string>();
  for (const device of devicesFound) {
    if (!expectedReadingsByDevice.has(device)) {
      extraDevices.add(device);
      differences.push({ source, kind: 'extra-device', device, expected: 0, found: 'data' });
    }
  }
  for (const [key, got] of found) {
    if (expected.has(key)) continue;
    totals.extra++;
    const { device, metric, start } = splitKey(key);
    if (!extraDevices.has(device))
      differences.push({
        source,
        kind: 'extra-window',
        device,
        metric,
        at: start,
        expected: 0,
        found: got.count,
      });
  }
  return totals;
}

export function compareLedger(ledger: Ledger, observed: Observed): VerifyReport {
  const { windowMs } = ledger.header;
  const differences: Difference[] = [];
  const expected = new Map<string, WindowStats>();
  let expectedReadings = 0;
  for (const w of ledger.windows) {
    expected.set(keyOf(w.device, w.metric, w.start), w);
    expectedReadings += w.count;
  }
  const readingsByDevice = new Map<string, number>();
  for (const d of ledger.devices) readingsByDevice.set(d.device, d.readings);

  const raw = rawWindows(observed.raw, windowMs, differences);
  const rawTotals = compareSource('raw', expected, raw.windows, readingsByDevice, differences);
  const aggTotals = compareSource('agg', expected, aggWindows(observed.agg), readingsByDevice, differences);

  let deadLetters: VerifyReport['deadLetters'];
  if (observed.deadLetters !== undefined) {
    const want = ledger.totals.invalidAcked;
    const found = { ...observed.deadLetters };
    let exact = true;
    for (const reason of new Set([...Object.keys(want), ...Object.keys(found)])) {
      const w = want[reason] ?? 0;
      const f = found[reason] ?? 0;
      // At least: an invalid message resent after a lost connection gets a new packet id, so the
      // gateway cannot tell it from a new one and stores a second dead letter. A reason the run
      // never provoked means valid data was rejected.
      if (f < w || (w === 0 && f > 0)) {
        exact = false;
        differences.push({
          source: 'deadletter',
          kind: 'deadletters',
          metric: reason,
          expected: w,
          found: f,
        });
      }
    }
    deadLetters = { expected: { ...want }, found, exact };
  }

  const byKind: Partial<Record<DiffKind, number>> = {};
  for (const d of differences) byKind[d.kind] = (byKind[d.kind] ?? 0) + 1;
  return {
    exact: differences.length === 0,
    promised: ledger.header.promised,
    raw: {
      ...rawTotals,
      expectedReadings,
      foundReadings: raw.readings,
      replayed: raw.replayed,
      conflicts: raw.conflicts,
    },
    agg: aggTotals,
    deadLetters,
    differences,
    byKind,
  };
}

const num = (v: number) => v.toLocaleString('en-US');

function cell(v: number | string | undefined): string {
  if (v === undefined) return '–';
  if (typeof v === 'string') return v;
  return Number.isInteger(v) ? num(v) : String(Number(v.toPrecision(12)));
}

function totalsLine(t: SourceTotals): string {
  return (
    `${num(t.expectedWindows)} windows expected: ${num(t.exact)} exact, ${num(t.missing)} missing, ` +
    `${num(t.mismatched)} different, ${num(t.extra)} unexpected`
  );
}

export interface ReportContext {
  tsdb: string;
  url: string;
  rows: number;
}

/** The human report: totals, then a table of the first differences. */
export function formatReport(ledger: Ledger, report: VerifyReport, ctx: ReportContext): string {
  const h = ledger.header;
  const lines: string[] = [];
  lines.push(
    `verify ${h.runId} (tenant ${h.tenant}, ${num(ledger.devices.length)} devices, QoS ${h.qos}) ` +
      `against ${ctx.tsdb} ${ctx.url}`,
  );
  lines.push(`  raw telemetry       ${totalsLine(report.raw)}`);
  lines.push(
    `                      ${num(report.raw.expectedReadings)} values expected, ${num(report.raw.foundReadings)} found` +
      ` (${num(report.raw.replayed)} replayed samples, ${num(report.raw.conflicts)} conflicts)`,
  );
  lines.push(`  telemetry_agg 10s   ${totalsLine(report.agg)}`);
  if (report.deadLetters !== undefined) {
    const reasons = [
      ...new Set([...Object.keys(report.deadLetters.expected), ...Object.keys(report.deadLetters.found)]),
    ].sort();
    const text =
      reasons.length === 0
        ? 'none expected, none found'
        : reasons
            .map((r) => `${r} ${report.deadLetters!.found[r] ?? 0}/${report.deadLetters!.expected[r] ?? 0}`)
            .join(', ');
    lines.push(`  dead letters        ${text} (found/expected)`);
  } else lines.push('  dead letters        not checked');
  if (ledger.totals.unacked > 0)
    lines.push(
      `  note: ${num(ledger.totals.unacked)} publishes (${num(ledger.totals.unackedReadings)} readings) were never ` +
        'acknowledged; the TSDB may hold them',
    );
  if (report.differences.length > 0) {
    const shown = report.differences.slice(0, ctx.rows);
    const header = ['source', 'kind', 'device', 'metric', 'window / time', 'expected', 'found'];
    const rows = shown.map((d) => [
      d.source,
      d.kind,
      d.device ?? '–',
      d.metric ?? '–',
      d.at === undefined ? '–' : new Date(d.at).toISOString(),
      cell(d.expected),
      cell(d.found),
    ]);
    const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => r[i]!.length)));
    const fmt = (r: string[]) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd();
    lines.push('');
    lines.push(`differences (${num(shown.length)} of ${num(report.differences.length)}):`);
    lines.push(`  ${fmt(header)}`);
    for (const r of rows) lines.push(`  ${fmt(r)}`);
    const kinds = Object.entries(report.byKind)
      .map(([k, v]) => `${k} ${num(v)}`)
      .join(', ');
    lines.push(`  by kind: ${kinds}`);
  }
  lines.push('');
  if (report.exact && !report.promised)
    lines.push(
      'EXACT: the TSDB holds everything written (QoS 0: nothing was acknowledged, nothing promised)',
    );
  else if (report.exact) lines.push('EXACT: the TSDB holds what the gateway acknowledged, and nothing else');
  else if (!report.promised)
    lines.push(
      `DIFFERENT (${num(report.differences.length)}), but QoS 0 promises nothing: reported, not failed`,
    );
  else lines.push(`DIFFERENT: ${num(report.differences.length)} differences`);
  return lines.join('\n');
}
