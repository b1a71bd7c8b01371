import { randomUUID } from 'node:crypto';

/**
 * Reading VictoriaMetrics' `/api/v1/export`, shared by the simulator's verifier and the test kit
 * (test/kit/victoria-metrics.ts re-exports these).
 *
 * How VictoriaMetrics (v1.79, the Debian package) stores what the processors write as InfluxDB line
 * protocol, found by experiment:
 * - Naming: line `m,tag=v f1=1,f2=2 ts` becomes two series, `m_f1{tag="v"}` and `m_f2{tag="v"}`.
 *   `measurement_field` is ambiguous when a measurement has `_` in it (`telemetry_agg_count` also
 *   starts with `telemetry_`): select by field, or by a tag only one measurement has.
 * - Duplicates: a second sample with the same series and timestamp is kept beside the first, where
 *   InfluxDB would overwrite it. The export returns every sample.
 * - A query run before just-written rows are searchable caches an empty answer for its exact label
 *   filters until the index flushes again, so every read adds a never-matching
 *   `kit_nonce!="<uuid>"` filter to miss that cache.
 * - Time range: the export stops at now unless told otherwise; writers may be a little ahead.
 */
export interface Series {
  /** `__name__` and the labels (the line's tags). */
  metric: Record<string, string>;
  values: number[];
  timestamps: number[];
}

/** One stored sample: one field of one line. */
export interface Sample {
  /** The VictoriaMetrics metric name, `${measurement}_${field}`. */
  name: string;
  /** The field, when the selector named the measurement (the name without `${measurement}_`). */
  field: string;
  tags: Record<string, string>;
  /** Milliseconds since the epoch (VictoriaMetrics stores ms). */
  timestamp: number;
  value: number;
}

export interface PointSelector {
  measurement: string;
  /** One field or several; all fields of the measurement when absent (see the naming caveat above). */
  field?: string | readonly string[];
  /** Exact tag values the samples must carry. */
  tags?: Readonly<Record<string, string>>;
  /** Tag values matching a regular expression (RE2, anchored by VictoriaMetrics). */
  tagPatterns?: Readonly<Record<string, string>>;
}

export interface TimeRange {
  /** ms since the epoch; default 1 s after the epoch (VictoriaMetrics ignores start=0). */
  startMs?: number;
  /** ms since the epoch; default now + 3 days (the export API stops at now otherwise). */
  endMs?: number;
}

/** Samples of one series at one timestamp, when there are more than one. */
export interface DuplicateSample {
  name: string;
  tags: Record<string, string>;
  timestamp: number;
  values: number[];
}

/** The export API stops at now; writers may be a little ahead of this machine's clock. */
export const READ_AHEAD_MS = 3 * 24 * 3600_000;

export function metricName(measurement: string, field: string): string {
  return `${measurement}_${field}`;
}

/** PromQL string literal: backslash, double quote and newline escaped. */
export function quote(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

export function escapeRegex(value: string): string {
  return value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function selectorToMatch(selector: PointSelector): string {
  const filters: string[] = [];
  const fields = selector.field === undefined ? undefined : ([] as string[]).concat(selector.field);
  if (fields?.length === 1) filters.push(`__name__=${quote(metricName(selector.measurement, fields[0]!))}`);
  else {
    const alternatives = fields ? `(${fields.map(escapeRegex).join('|')})` : '.+';
    filters.push(`__name__=~${quote(`${escapeRegex(selector.measurement)}_${alternatives}`)}`);
  }
  for (const [name, value] of Object.entries(selector.tags ?? {})) filters.push(`${name}=${quote(value)}`);
  for (const [name, pattern] of Object.entries(selector.tagPatterns ?? {}))
    filters.push(`${name}=~${quote(pattern)}`);
  return `{${filters.join(',')}}`;
}

/** Adds a filter no series can fail, unique per call, so the query misses the tagFilters cache. */
export function withNonce(match: string): string {
  const nonce = `kit_nonce!=${quote(randomUUID())}`;
  const trimmed = match.trim();
  if (!trimmed.endsWith('}')) return `${trimmed}{${nonce}}`;
  const body = trimmed.slice(trimmed.lastIndexOf('{') + 1, -1).trim();
  return `${trimmed.slice(0, -1)}${body === '' ? '' : ','}${nonce}}`;
}

/** Identity of a series: metric name and its tags in name order. */
export function seriesKey(sample: Pick<Sample, 'name' | 'tags'>): string {
  const tags = Object.keys(sample.tags)
    .sort()
    .map((k) => `${k}=${sample.tags[k]}`);
  return [sample.name, ...tags].join(',');
}

export function seriesToSamples(series: readonly Series[], measurement: string | undefined): Sample[] {
  const samples: Sample[] = [];
  for (const s of series) {
    const { __name__: name = '', ...tags } = s.metric;
    const prefix = measurement === undefined ? undefined : `${measurement}_`;
    const field = prefix !== undefined && name.startsWith(prefix) ? name.slice(prefix.length) : name;
    s.timestamps.forEach((timestamp, i) => {
      samples.push({ name, field, tags, timestamp, value: s.values[i]! });
    });
  }
  return samples.sort((a, b) => seriesKey(a).localeCompare(seriesKey(b)) || a.timestamp - b.timestamp);
}

/** Samples grouped by series and timestamp: InfluxDB keeps one per key, VictoriaMetrics keeps them all. */
export function groupSamples(samples: readonly Sample[]): Map<string, Sample[]> {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const key = `${seriesKey(s)}@${s.timestamp}`;
    const group = groups.get(key);
    if (group) group.push(s);
    else groups.set(key, [s]);
  }
  return groups;
}

/** Every series+timestamp stored more than once, with all of its values (equal values = a replay). */
export function findDuplicates(samples: readonly Sample[]): DuplicateSample[] {
  const duplicates: DuplicateSample[] = [];
  for (const group of groupSamples(samples).values()) {
    if (group.length < 2) continue;
    const { name, tags, timestamp } = group[0]!;
    duplicates.push({ name, tags, timestamp, values: group.map((s) => s.value) });
  }
  return duplicates;
}

export class ExportError extends Error {
  readonly code = 'VM_EXPORT_FAILED';
  constructor(
    message: string,
    readonly status: number | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ExportError';
  }
}

/** Raw `/api/v1/export` for a series selector, e.g. `{__name__=~"telemetry_agg_.*"}`. */
export async function exportSeries(
  baseUrl: string,
  match: string,
  range: TimeRange = {},
  headers: Record<string, string> = {},
): Promise<Series[]> {
  const params = new URLSearchParams({
    'match[]': withNonce(match),
    start: String((range.startMs ?? 1_000) / 1000),
    end: String((range.endMs ?? Date.now() + READ_AHEAD_MS) / 1000),
  });
  let res: Response;
  try {
    res = await fetch(`${baseUrl.replace(/\/+$/, '')}/api/v1/export`, {
      method: 'POST',
      body: params,
      headers,
    });
  } catch (err) {
    throw new ExportError(`export ${match}: ${(err as Error).message}`, undefined, { cause: err });
  }
  const text = await res.text();
  if (!res.ok)
    throw new ExportError(`export ${match} failed: ${res.status} ${text.slice(0, 500)}`, res.status);
  const series: Series[] = [];
  for (const line of text.split('\n')) if (line.trim() !== '') series.push(JSON.parse(line) as Series);
  return series;
}
