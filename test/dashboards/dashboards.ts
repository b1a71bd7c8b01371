import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';

/**
 * Reading Grafana's files the way Grafana does, as far as the checks need: provisioned datasources,
 * dashboard JSON, and every query a dashboard holds (panel targets, template variables, annotations).
 */
export const DASHBOARDS_DIR = 'dashboards/json';
export const DATASOURCES_FILE = 'dashboards/provisioning/datasources/datasources.yaml';
export const DASHBOARD_PROVIDERS_FILE = 'dashboards/provisioning/dashboards/dashboards.yaml';

/** Built into Grafana, never provisioned: the annotations and alerts of Grafana itself. */
export const BUILT_IN_DATASOURCE_UIDS: ReadonlySet<string> = new Set(['-- Grafana --', 'grafana']);

export interface DatasourceRef {
  type?: string;
  uid?: string;
}

export interface Target {
  refId?: string;
  datasource?: DatasourceRef;
  /** InfluxQL, with rawQuery. */
  query?: string;
  rawQuery?: boolean;
  /** PromQL. */
  expr?: string;
  hide?: boolean;
}

export interface Panel {
  id?: number;
  type: string;
  title?: string;
  datasource?: DatasourceRef;
  targets?: Target[];
  /** Rows hold their panels here when collapsed. */
  panels?: Panel[];
}

export interface Variable {
  name: string;
  type: string;
  datasource?: DatasourceRef;
  /** A string for InfluxDB and Prometheus; newer Grafana may store `{ query }`. */
  query?: string | { query?: string };
  multi?: boolean;
  includeAll?: boolean;
}

export interface Annotation {
  name: string;
  builtIn?: number;
  datasource?: DatasourceRef;
  enable?: boolean;
  /** Legacy InfluxDB annotations keep the query here… */
  query?: string;
  /** …and current ones in a target (Grafana migrates the first into the second). */
  target?: { query?: string; expr?: string };
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating?: { list: Variable[] };
  annotations?: { list: Annotation[] };
  links?: Array<{ type: string; url?: string; tags?: string[] }>;
}

export interface LoadedDashboard {
  file: string;
  dashboard: Dashboard;
}

export interface ProvisionedDatasource {
  name: string;
  uid: string;
  type: string;
  url?: string;
  jsonData?: Record<string, unknown>;
  secureJsonData?: Record<string, unknown>;
}

export function loadDatasources(file = DATASOURCES_FILE): ProvisionedDatasource[] {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { datasources?: ProvisionedDatasource[] };
  return doc.datasources ?? [];
}

export function loadDashboard(file: string): LoadedDashboard {
  return { file, dashboard: JSON.parse(readFileSync(file, 'utf8')) as Dashboard };
}

export function loadDashboards(dir = DASHBOARDS_DIR): LoadedDashboard[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => loadDashboard(join(dir, name)));
}

/** Every panel, rows and the panels of collapsed rows included. */
export function allPanels(dashboard: Dashboard): Panel[] {
  const out: Panel[] = [];
  const visit = (panels: readonly Panel[]) => {
    for (const p of panels) {
      out.push(p);
      if (p.panels) visit(p.panels);
    }
  };
  visit(dashboard.panels ?? []);
  return out;
}

export type QueryLanguage = 'influxql' | 'promql';

export interface DashboardQuery {
  file: string;
  dashboard: string;
  /** Where it is, for messages: `panel "Alerts firing" (id 4) target A`, `variable device`, … */
  where: string;
  kind: 'panel' | 'variable' | 'annotation';
  datasource: DatasourceRef | undefined;
  text: string;
  /** For a variable: its name, so its answer can be checked against the value used for it. */
  variable?: string;
}

function variableQuery(v: Variable): string | undefined {
  return typeof v.query === 'string' ? v.query : v.query?.query;
}

/** Every query of a dashboard, with the datasource it runs on (a target's own, else its panel's). */
export function dashboardQueries({ file, dashboard }: LoadedDashboard): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  const base = { file, dashboard: dashboard.title };
  for (const panel of allPanels(dashboard)) {
    for (const t of panel.targets ?? []) {
      const text = t.query ?? t.expr;
      if (text === undefined || t.hide) continue;
      out.push({
        ...base,
        where: `panel "${panel.title ?? ''}" (id ${panel.id}) target ${t.refId ?? '?'}`,
        kind: 'panel',
        datasource: t.datasource ?? panel.datasource,
        text,
      });
    }
  }
  for (const v of dashboard.templating?.list ?? []) {
    const text = variableQuery(v);
    if (v.type !== 'query' || text === undefined) continue;
    out.push({
      ...base,
      where: `variable ${v.name}`,
      kind: 'variable',
      datasource: v.datasource,
      text,
      variable: v.name,
    });
  }
  for (const a of dashboard.annotations?.list ?? []) {
    if (a.builtIn) continue;
    const text = a.target?.query ?? a.target?.expr ?? a.query;
    if (text === undefined) continue;
    out.push({
      ...base,
      where: `annotation "${a.name}"`,
      kind: 'annotation',
      datasource: a.datasource,
      text,
    });
  }
  return out;
}

/** The query language of a datasource, from its provisioned type. */
export function languageOf(
  ref: DatasourceRef | undefined,
  datasources: readonly ProvisionedDatasource[],
): QueryLanguage | undefined {
  const type = datasources.find((d) => d.uid === ref?.uid)?.type ?? ref?.type;
  if (type === 'influxdb') return 'influxql';
  if (type === 'prometheus') return 'promql';
  return undefined;
}
