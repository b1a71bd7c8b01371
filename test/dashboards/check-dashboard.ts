import {
  allPanels,
  BUILT_IN_DATASOURCE_UIDS,
  type DatasourceRef,
  dashboardQueries,
  type LoadedDashboard,
  languageOf,
  type ProvisionedDatasource,
} from './dashboards.js';
import { BUILT_IN_MACROS, variableReferences } from './grafana-variables.js';
import { checkInfluxqlReferences, type InfluxSchema } from './influxql-references.js';
import { checkPromqlReferences } from './promql-references.js';
import type { MetricCatalog } from './schema.js';

export interface CheckContext {
  datasources: readonly ProvisionedDatasource[];
  influx: InfluxSchema;
  metrics: MetricCatalog;
}

/**
 * What is wrong with one dashboard's JSON, without running anything: panel ids, datasource
 * references, variables, and every measurement, tag, field and metric its queries name. Each problem
 * says where it is (`file: panel "…" (id n) target A: …`).
 */
export function checkDashboard(loaded: LoadedDashboard, ctx: CheckContext): string[] {
  const { file, dashboard } = loaded;
  const problems: string[] = [];
  const at = (where: string, problem: string) => problems.push(`${file}: ${where}: ${problem}`);

  if (!dashboard.uid) at('dashboard', 'no uid (links and provisioning need a stable one)');

  const ids = new Map<number, string>();
  for (const panel of allPanels(dashboard)) {
    const name = `panel "${panel.title ?? ''}"`;
    if (typeof panel.id !== 'number') {
      at(name, 'no numeric id');
      continue;
    }
    const first = ids.get(panel.id);
    if (first !== undefined) at(name, `id ${panel.id} already used by ${first}`);
    else ids.set(panel.id, name);
  }

  const checkRef = (where: string, ref: DatasourceRef | undefined) => {
    if (ref?.uid === undefined) return;
    if (BUILT_IN_DATASOURCE_UIDS.has(ref.uid)) return;
    const ds = ctx.datasources.find((d) => d.uid === ref.uid);
    if (!ds) at(where, `datasource uid "${ref.uid}" is not provisioned`);
    else if (ref.type !== undefined && ref.type !== ds.type)
      at(where, `datasource "${ref.uid}" is a ${ds.type}, not a ${ref.type}`);
  };
  for (const panel of allPanels(dashboard)) {
    const name = `panel "${panel.title ?? ''}" (id ${panel.id})`;
    checkRef(name, panel.datasource);
    for (const t of panel.targets ?? []) {
      const where = `${name} target ${t.refId ?? '?'}`;
      checkRef(where, t.datasource);
      const language = languageOf(t.datasource ?? panel.datasource, ctx.datasources);
      // Without rawQuery Grafana ignores `query` and builds one from its visual editor's fields.
      if (language === 'influxql' && t.query !== undefined && t.rawQuery !== true)
        at(where, 'query without rawQuery: true');
      if (language === 'promql' && t.expr === undefined) at(where, 'Prometheus target without expr');
    }
  }
  for (const v of dashboard.templating?.list ?? []) checkRef(`variable ${v.name}`, v.datasource);
  for (const a of dashboard.annotations?.list ?? []) checkRef(`annotation "${a.name}"`, a.datasource);

  const declared = new Set([
    ...(dashboard.templating?.list ?? []).map((v) => v.name),
    ...Object.keys(BUILT_IN_MACROS),
  ]);
  const undeclared = (text: string) => variableReferences(text).filter((name) => !declared.has(name));
  for (const panel of allPanels(dashboard)) {
    for (const name of undeclared(panel.title ?? ''))
      at(`panel "${panel.title}"`, `title uses undeclared $${name}`);
  }

  for (const q of dashboardQueries(loaded)) {
    for (const name of undeclared(q.text)) at(q.where, `uses undeclared variable $${name}`);
    const language = languageOf(q.datasource, ctx.datasources);
    if (language === undefined) {
      at(q.where, `query on no known datasource (${JSON.stringify(q.datasource)})`);
      continue;
    }
    const found =
      language === 'influxql'
        ? checkInfluxqlReferences(q.text, ctx.influx)
        : checkPromqlReferences(q.text, ctx.metrics);
    for (const problem of found) at(q.where, problem);
  }
  return problems;
}
