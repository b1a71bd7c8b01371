import {
  AGGREGATE_MEASUREMENT,
  TAG_DEVICE,
  TAG_METRIC,
  TAG_TENANT,
  TAG_WINDOW,
  TELEMETRY_MEASUREMENT,
} from '../contract/measurements.js';
import { TsdbReadError } from './errors.js';
import type { AggField, AggPoint, RawPoint } from './verify.js';
import { AGG_FIELDS } from './verify.js';
import { ExportError, escapeRegex, exportSeries, quote } from './victoria-metrics.js';

/**
 * What `verify` reads back: a run's raw telemetry and its window aggregates, from VictoriaMetrics
 * (its export API) or InfluxDB (InfluxQL on the v1-compatible `/query`, which InfluxDB 1.8+ and
 * 2.x with a DBRP mapping answer). Both readers return every stored sample; deciding what a
 * duplicate means is verify.ts's job.
 */
export interface ReadQuery {
  tenant: string;
  /** Every device of the run has an id starting with this. */
  devicePrefix: string;
  /** Window tag of the aggregates to read (`10s`). */
  window: string;
  startMs: number;
  endMs: number;
}

export interface TsdbReader {
  readonly kind: 'victoria' | 'influx';
  readonly url: string;
  read(query: ReadQuery): Promise<{ raw: RawPoint[]; agg: AggPoint[] }>;
}

export interface TsdbSettings {
  url: string;
  token: string;
  org: string;
  bucket: string;
}

function authHeaders(token: string): Record<string, string> {
  return token === '' ? {} : { Authorization: `Token ${token}` };
}

const base = (url: string) => url.replace(/\/+$/, '');

export class VictoriaMetricsReader implements TsdbReader {
  readonly kind = 'victoria';
  constructor(private readonly settings: TsdbSettings) {}

  get url(): string {
    return this.settings.url;
  }

  private async export(match: string, q: ReadQuery) {
    try {
      return await exportSeries(
        this.settings.url,
        match,
        { startMs: q.startMs, endMs: q.endMs },
        authHeaders(this.settings.token),
      );
    } catch (err) {
      const status = err instanceof ExportError ? err.status : undefined;
      throw new TsdbReadError((err as Error).message, this.settings.url, status, { cause: err });
    }
  }

  async read(q: ReadQuery): Promise<{ raw: RawPoint[]; agg: AggPoint[] }> {
    const devices = `${TAG_DEVICE}=~${quote(`${escapeRegex(q.devicePrefix)}.*`)}`;
    const tenant = `${TAG_TENANT}=${quote(q.tenant)}`;
    const rawPrefix = `${TELEMETRY_MEASUREMENT}_`;
    const aggPrefix = `${AGGREGATE_MEASUREMENT}_`;
    // Raw telemetry has no window tag; `window=""` matches series without one.
    const [rawSeries, aggSeries] = await Promise.all([
      this.export(
        `{__name__=~${quote(`${escapeRegex(rawPrefix)}.+`)},${tenant},${devices},${TAG_WINDOW}=""}`,
        q,
      ),
      this.export(
        `{__name__=~${quote(`${escapeRegex(aggPrefix)}(${AGG_FIELDS.join('|')})`)},${tenant},${devices},${TAG_WINDOW}=${quote(q.window)}}`,
        q,
      ),
    ]);
    const raw: RawPoint[] = [];
    for (const s of rawSeries) {
      const name = s.metric.__name__ ?? '';
      const device = s.metric[TAG_DEVICE];
      if (device === undefined || !name.startsWith(rawPrefix)) continue;
      const metric = name.slice(rawPrefix.length);
      for (const [i, ts] of s.timestamps.entries()) raw.push({ device, metric, ts, value: s.values[i]! });
    }
    const agg: AggPoint[] = [];
    for (const s of aggSeries) {
      const name = s.metric.__name__ ?? '';
      const device = s.metric[TAG_DEVICE];
      const metric = s.metric[TAG_METRIC];
      if (device === undefined || metric === undefined || !name.startsWith(aggPrefix)) continue;
      const field = name.slice(aggPrefix.length) as AggField;
      for (const [i, start] of s.timestamps.entries())
        agg.push({ device, metric, start, field, value: s.values[i]! });
    }
    return { raw, agg };
  }
}

/** InfluxQL string literal. */
function str(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** InfluxQL identifier. */
function ident(name: string): string {
  return `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

interface InfluxResponse {
  results?: Array<{ series?: InfluxSeries[]; error?: string }>;
  error?: string;
}

/** Rows per chunk: InfluxDB 1.x caps non-chunked answers at max-row-limit (10,000 by default). */
const CHUNK_SIZE = 10_000;

export class InfluxQlReader implements TsdbReader {
  readonly kind = 'influx';
  constructor(private readonly settings: TsdbSettings) {}

  get url(): string {
    return this.settings.url;
  }

  /** Every series of every chunk of one query's answer. */
  async query(q: string): Promise<InfluxSeries[]> {
    const params = new URLSearchParams({
      db: this.settings.bucket,
      q,
      epoch: 'ms',
      chunked: 'true',
      chunk_size: String(CHUNK_SIZE),
    });
    let res: Response;
    try {
      res = await fetch(`${base(this.settings.url)}/query?${params}`, {
        headers: authHeaders(this.settings.token),
      });
    } catch (err) {
      throw new TsdbReadError(
        `InfluxQL query failed: ${(err as Error).message}`,
        this.settings.url,
        undefined,
        {
          cause: err,
        },
      );
    }
    const text = await res.text();
    if (!res.ok)
      throw new TsdbReadError(
        `InfluxQL query failed: ${res.status} ${text.slice(0, 500)}`,
        this.settings.url,
        res.status,
      );
    const series: InfluxSeries[] = [];
    // Chunked answers are one JSON document per line.
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      const doc = JSON.parse(line) as InfluxResponse;
      const error = doc.error ?? doc.results?.find((r) => r.error !== undefined)?.error;
      if (error !== undefined) throw new TsdbReadError(`InfluxQL: ${error}`, this.settings.url, res.status);
      for (const r of doc.results ?? []) series.push(...(r.series ?? []));
    }
    return series;
  }

  async read(q: ReadQuery): Promise<{ raw: RawPoint[]; agg: AggPoint[] }> {
    const where =
      `${ident(TAG_TENANT)} = ${str(q.tenant)} AND ${ident(TAG_DEVICE)} =~ /^${escapeRegex(q.devicePrefix).replace(/\//g, '\\/')}/` +
      ` AND time >= ${Math.floor(q.startMs)}ms AND time <= ${Math.ceil(q.endMs)}ms`;
    const [rawSeries, aggSeries] = await Promise.all([
      this.query(
        `SELECT *::field FROM ${ident(TELEMETRY_MEASUREMENT)} WHERE ${where} GROUP BY ${ident(TAG_DEVICE)}`,
      ),
      this.query(
        `SELECT ${AGG_FIELDS.map(ident).join(',')} FROM ${ident(AGGREGATE_MEASUREMENT)} WHERE ${where}` +
          ` AND ${ident(TAG_WINDOW)} = ${str(q.window)} GROUP BY ${ident(TAG_DEVICE)},${ident(TAG_METRIC)}`,
      ),
    ]);
    const raw: RawPoint[] = [];
    for (const s of rawSeries) {
      const device = s.tags?.[TAG_DEVICE];
      if (device === undefined) continue;
      for (const row of s.values) {
        const ts = row[0] as number;
        s.columns.forEach((column, i) => {
          const value = row[i];
          if (i === 0 || typeof value !== 'number') return;
          raw.push({ device, metric: column, ts, value });
        });
      }
    }
    const agg: AggPoint[] = [];
    for (const s of aggSeries) {
      const device = s.tags?.[TAG_DEVICE];
      const metric = s.tags?.[TAG_METRIC];
      if (device === undefined || metric === undefined) continue;
      for (const row of s.values) {
        const start = row[0] as number;
        s.columns.forEach((column, i) => {
          const value = row[i];
          if (i === 0 || typeof value !== 'number') return;
          agg.push({ device, metric, start, field: column as AggField, value });
        });
      }
    }
    return { raw, agg };
  }
}

const PROBE_TIMEOUT_MS = 5_000;

/**
 * VictoriaMetrics answers `/api/v1/status/tsdb`; InfluxDB answers `/ping` with an
 * X-Influxdb-Version header. Asked in that order: VictoriaMetrics answers `/ping` too.
 */
export async function detectTsdb(settings: TsdbSettings): Promise<'victoria' | 'influx'> {
  const get = (path: string) =>
    fetch(`${base(settings.url)}${path}`, {
      headers: authHeaders(settings.token),
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
  let reached = false;
  let lastError = '';
  try {
    const res = await get('/api/v1/status/tsdb');
    reached = true;
    if (res.ok) {
      const body = (await res.json().catch(() => undefined)) as { status?: string } | undefined;
      if (body?.status === 'success') return 'victoria';
    } else await res.body?.cancel();
  } catch (err) {
    lastError = (err as Error).message;
  }
  try {
    const res = await get('/ping');
    reached = true;
    await res.body?.cancel();
    if (res.headers.has('x-influxdb-version')) return 'influx';
  } catch (err) {
    lastError = (err as Error).message;
  }
  throw new TsdbReadError(
    reached
      ? `${settings.url} is neither VictoriaMetrics nor InfluxDB (pass --tsdb victoria|influx)`
      : `cannot reach the TSDB at ${settings.url}: ${lastError}`,
    settings.url,
  );
}

export async function createTsdbReader(
  kind: 'auto' | 'victoria' | 'influx',
  settings: TsdbSettings,
): Promise<TsdbReader> {
  const resolved = kind === 'auto' ? await detectTsdb(settings) : kind;
  return resolved === 'victoria' ? new VictoriaMetricsReader(settings) : new InfluxQlReader(settings);
}
