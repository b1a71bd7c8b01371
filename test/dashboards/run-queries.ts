import type { InfluxDb } from '../kit/influxdb.js';
import {
  type DashboardQuery,
  dashboardQueries,
  type LoadedDashboard,
  languageOf,
  type ProvisionedDatasource,
  type QueryLanguage,
} from './dashboards.js';
import { substituteVariables, variableReferences } from './grafana-variables.js';

/** What a server answered to one query: an error, or the rows (as the values a variable would offer). */
export interface QueryAnswer {
  error?: string;
  rows: number;
  /** For variable queries: the values Grafana would list. */
  values: string[];
  /**
   * Columns without a single value: InfluxDB answers a field it does not have with nulls beside the
   * fields it has, so a misspelt field in a multi-field SELECT would otherwise pass as data.
   */
  nullColumns?: string[];
}

export type QueryRunner = (query: string) => Promise<QueryAnswer>;

/**
 * Values the checks give each dashboard variable: `one` for every run, and `all` for a second run of
 * the queries that use a multi-value or All variable (Grafana then writes `(a|b)`).
 */
export interface VariableValues {
  one: Readonly<Record<string, readonly string[]>>;
  all: Readonly<Record<string, readonly string[]>>;
}

export interface QueryFailure {
  where: string;
  query: string;
  problem: string;
}

export function formatFailure(f: QueryFailure): string {
  return `${f.where}: ${f.problem}\n    ${f.query}`;
}

/**
 * Runs every query of the dashboards whose datasource has a runner, with the variables substituted,
 * and returns what failed: an error, an empty answer, a column without a value, a reference to a
 * variable without a value, or a variable query that does not offer the value the other queries use.
 */
export async function runDashboardQueries(
  dashboards: readonly LoadedDashboard[],
  datasources: readonly ProvisionedDatasource[],
  values: VariableValues,
  runners: Partial<Record<QueryLanguage, QueryRunner>>,
): Promise<{ failures: QueryFailure[]; ran: number }> {
  const failures: QueryFailure[] = [];
  let ran = 0;
  for (const loaded of dashboards) {
    const multi = new Set(
      (loaded.dashboard.templating?.list ?? []).filter((v) => v.multi || v.includeAll).map((v) => v.name),
    );
    for (const q of dashboardQueries(loaded)) {
      const language = languageOf(q.datasource, datasources);
      const run = language && runners[language];
      if (!run) continue;
      const variants = [values.one];
      const used = new Set([...variableReferences(q.text), ...(q.variable ? [q.variable] : [])]);
      const allOverrides = Object.fromEntries(
        Object.entries(values.all).filter(([name]) => multi.has(name) && used.has(name)),
      );
      if (Object.keys(allOverrides).length > 0) variants.push({ ...values.one, ...allOverrides });
      for (const variant of variants) {
        ran++;
        const failure = await runOne(q, variant, run);
        if (failure) failures.push(failure);
      }
    }
  }
  return { failures, ran };
}

async function runOne(
  q: DashboardQuery,
  variant: Readonly<Record<string, readonly string[]>>,
  run: QueryRunner,
): Promise<QueryFailure | undefined> {
  const where = `${q.file}: ${q.where}`;
  const { text, unknown } = substituteVariables(q.text, variant);
  if (unknown.length > 0)
    return { where, query: text, problem: `no value for ${unknown.map((n) => `$${n}`).join(', ')}` };
  const answer = await run(text);
  if (answer.error !== undefined) return { where, query: text, problem: `error: ${answer.error}` };
  if (answer.rows === 0) return { where, query: text, problem: 'empty result' };
  if (answer.nullColumns?.length) {
    return {
      where,
      query: text,
      problem: `no values in ${answer.nullColumns.map((c) => `"${c}"`).join(', ')}`,
    };
  }
  const expected = q.variable === undefined ? [] : (variant[q.variable] ?? []);
  const missing = expected.filter((v) => !answer.values.includes(v));
  if (missing.length > 0) {
    return { where, query: text, problem: `offers ${answer.values.join(', ')}, not ${missing.join(', ')}` };
  }
  return undefined;
}

/** InfluxQL on a 1.x `/query`, read as Grafana reads it (variables: SHOW TAG VALUES gives column 1). */
export function influxRunner(influx: InfluxDb, db: string): QueryRunner {
  return async (query) => {
    const results = await influx.query(query, db);
    const error = results.find((r) => r.error !== undefined)?.error;
    if (error !== undefined) return { error, rows: 0, values: [] };
    const column = /^\s*SHOW\s+TAG\s+VALUES\b/i.test(query) ? 1 : 0;
    const series = results.flatMap((r) => r.series ?? []);
    const rows = series.flatMap((s) => s.values);
    const filled = new Set<string>();
    const seen = new Set<string>();
    for (const s of series) {
      s.columns.forEach((name, i) => {
        seen.add(name);
        if (s.values.some((row) => row[i] !== null)) filled.add(name);
      });
    }
    return {
      rows: rows.length,
      values: rows.map((row) => String(row[column])),
      nullColumns: [...seen].filter((name) => !filled.has(name)),
    };
  };
}

/** PromQL on a Prometheus-compatible `/api/v1/query` (VictoriaMetrics in the tests) at `timeSeconds`. */
export function prometheusRunner(baseUrl: string, timeSeconds: number): QueryRunner {
  return async (query) => {
    const params = new URLSearchParams({ query, time: String(timeSeconds) });
    const res = await fetch(`${baseUrl}/api/v1/query?${params}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: unknown };
    };
    if (body.status !== 'success') return { error: body.error ?? `HTTP ${res.status}`, rows: 0, values: [] };
    const result = body.data?.result;
    const rows = Array.isArray(result) ? (body.data?.resultType === 'scalar' ? 1 : result.length) : 0;
    return { rows, values: [] };
  };
}
