import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  AGGREGATE_MEASUREMENT,
  ALERTS_MEASUREMENT,
  DEVICE_STATUS_MEASUREMENT,
  FLEET_MEASUREMENT,
  TELEMETRY_MEASUREMENT,
} from '../../contract/measurements.js';
import { checkDashboard } from './check-dashboard.js';
import {
  DASHBOARD_PROVIDERS_FILE,
  dashboardQueries,
  loadDashboard,
  loadDashboards,
  loadDatasources,
} from './dashboards.js';
import { parseInfluxql } from './influxql-references.js';
import { promqlReferences } from './promql-references.js';
import { influxSchema, lineFieldKeys, metricCatalog } from './schema.js';

const datasources = loadDatasources();
const ctx = { datasources, influx: influxSchema(), metrics: metricCatalog() };
const dashboards = loadDashboards();

describe('provisioning', () => {
  it('provisions InfluxDB in InfluxQL mode, token from the environment, and Prometheus, under fixed uids', () => {
    const influx = datasources.find((d) => d.uid === 'influxdb');
    expect(influx).toMatchObject({
      type: 'influxdb',
      url: 'http://influxdb:8086',
      jsonData: { version: 'InfluxQL', dbName: 'telemetry', httpHeaderName1: 'Authorization' },
      // Grafana expands the variable from its environment when it reads the file.
      secureJsonData: { httpHeaderValue1: expect.stringMatching(/^Token \$\{INFLUX_TOKEN\}$/) },
    });
    expect(datasources.find((d) => d.uid === 'prometheus')).toMatchObject({
      type: 'prometheus',
      url: 'http://prometheus:9090',
    });
    expect(new Set(datasources.map((d) => d.uid)).size).toBe(datasources.length);
  });

  it('loads the dashboards from the directory the JSON is mounted at', () => {
    const doc = parseYaml(readFileSync(DASHBOARD_PROVIDERS_FILE, 'utf8')) as {
      providers: Array<{ type: string; options: { path: string } }>;
    };
    expect(doc.providers).toEqual([
      expect.objectContaining({
        type: 'file',
        options: expect.objectContaining({ path: '/var/lib/grafana/dashboards' }),
      }),
    ]);
  });
});

describe('dashboards', () => {
  it('are the four of the issue, with distinct uids', () => {
    expect(dashboards.map((d) => d.dashboard.uid).sort()).toEqual([
      'alerts',
      'device-detail',
      'fleet-overview',
      'pipeline-health',
    ]);
  });

  it.each(dashboards.map((d) => [d.file, d] as const))(
    '%s: ids, datasources, variables and names',
    (_, d) => {
      expect(checkDashboard(d, ctx)).toEqual([]);
    },
  );

  it('query every measurement the processors write', () => {
    const measurements = new Set<string>();
    for (const d of dashboards) {
      for (const q of dashboardQueries(d)) {
        if (q.datasource?.uid !== 'influxdb') continue;
        for (const s of parseInfluxql(q.text)) {
          if (s.kind === 'show' && s.from) measurements.add(s.from);
          if (s.kind === 'select') {
            for (const src of s.sources) {
              if ('measurement' in src) measurements.add(src.measurement);
              if ('subquery' in src) {
                for (const inner of src.subquery.sources)
                  if ('measurement' in inner) measurements.add(inner.measurement);
              }
            }
          }
        }
      }
    }
    expect([...measurements].sort()).toEqual(
      [
        TELEMETRY_MEASUREMENT,
        AGGREGATE_MEASUREMENT,
        FLEET_MEASUREMENT,
        ALERTS_MEASUREMENT,
        DEVICE_STATUS_MEASUREMENT,
      ].sort(),
    );
  });

  it('link only to dashboards that exist', () => {
    const uids = new Set(dashboards.map((d) => d.dashboard.uid));
    for (const d of dashboards) {
      for (const [, uid] of readFileSync(d.file, 'utf8').matchAll(/\/d\/([\w-]+)/g))
        expect(uids).toContain(uid);
    }
  });
});

describe('the JSON check', () => {
  it('reports every fault of its fixture', () => {
    const file = 'test/dashboards/fixtures/broken-references.json';
    const problems = checkDashboard(loadDashboard(file), ctx).map((p) => p.replace(`${file}: `, ''));
    expect(problems).toEqual([
      'panel "Wrong tag, and the id of the panel above": id 1 already used by panel "Wrong field"',
      'panel "Datasource that is not provisioned" (id 4): datasource uid "influxdb-old" is not provisioned',
      'panel "Query without rawQuery" (id 5) target A: query without rawQuery: true',
      'panel "Wrong field" (id 1) target A: unknown field "p96" in telemetry_agg',
      'panel "Wrong tag, and the id of the panel above" (id 1) target A: unknown tag or field "grp" in WHERE on fleet_agg',
      'panel "Wrong measurement" (id 3) target A: unknown measurement "device_state"',
      'panel "Undeclared variable" (id 6) target A: uses undeclared variable $device',
      'panel "Subquery not grouped by the tag used outside" (id 7) target A: GROUP BY "rule": the subquery does not group by it',
      'panel "Telemetry filtered on a tag it does not have" (id 8) target A: unknown tag or field "devce" in WHERE on telemetry',
      'panel "Metric and label the services do not expose" (id 9) target A: unknown metric gateway_events_totl',
      'panel "Metric and label the services do not expose" (id 9) target B: label reasn is on none of gateway_deadletters_total',
      'variable tenant: unknown tag "tenants" in WITH KEY on alerts',
    ]);
  });

  it('follows names through subqueries and SHOW statements', () => {
    const [outer] = parseInfluxql(
      'SELECT count("state") AS "firing" FROM (SELECT last("state") AS "state" FROM "alerts" ' +
        `WHERE "tenant" =~ /^a$/ GROUP BY "tenant", "device") WHERE "state" = 'firing' GROUP BY "tenant"`,
    );
    expect(outer).toMatchObject({
      kind: 'select',
      items: [{ refs: [{ name: 'state', variable: false }], output: 'firing' }],
      whereRefs: [{ name: 'state' }],
      groupByTags: [{ name: 'tenant' }],
      sources: [
        {
          subquery: {
            items: [{ output: 'state' }],
            sources: [{ measurement: 'alerts' }],
            whereRefs: [{ name: 'tenant' }],
            groupByTags: [{ name: 'tenant' }, { name: 'device' }],
          },
        },
      ],
    });
    expect(
      parseInfluxql('SHOW TAG VALUES FROM "telemetry_agg" WITH KEY = "metric" WHERE "device" =~ /^$device$/'),
    ).toEqual([
      {
        kind: 'show',
        what: 'TAG VALUES',
        from: 'telemetry_agg',
        keys: [{ name: 'metric', variable: false }],
        whereRefs: [{ name: 'device', variable: false }],
      },
    ]);
    expect(
      parseInfluxql(
        'SELECT mean("$metric") FROM "telemetry" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
      ),
    ).toMatchObject([
      { items: [{ refs: [{ name: '$metric', variable: true }] }], whereRefs: [], groupByTags: [] },
    ]);
  });

  it('reads metric and label names out of PromQL', () => {
    expect(
      promqlReferences(
        'histogram_quantile(0.95, sum by (le) (rate(gateway_jetstream_ack_seconds_bucket{job=~"gw.*"}[$__rate_interval]))) / 1e3',
      ),
    ).toEqual({ metrics: ['gateway_jetstream_ack_seconds_bucket'], labels: ['job', 'le'] });
  });

  it('takes the alerts and device_status fields from the lines the processors build', () => {
    expect(lineFieldKeys('alerts,device=d,tenant=t state="firing, or not",value=1 5')).toEqual([
      'state',
      'value',
    ]);
    expect(ctx.influx.get(ALERTS_MEASUREMENT)?.fields).toEqual(new Set(['state', 'value']));
    expect(ctx.influx.get(DEVICE_STATUS_MEASUREMENT)?.fields).toEqual(new Set(['online', 'reason']));
  });
});
