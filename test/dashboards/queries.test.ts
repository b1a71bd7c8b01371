import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type InfluxDb, startInfluxDb } from '../kit/influxdb.js';
import { loadDashboard, loadDashboards, loadDatasources } from './dashboards.js';
import { formatFailure, influxRunner, runDashboardQueries, type VariableValues } from './run-queries.js';
import { SCENARIO_TENANTS, scenarioLines } from './scenario.js';

/**
 * Every InfluxQL query of every dashboard (panels, template variables, annotations) on a real
 * InfluxDB 1.x loaded with what the processors write for a fixed scenario (scenario.ts): each must
 * parse and find something. InfluxDB 1.6 is the oldest server the queries are run on; features it
 * lacks would fail here before they reached a 1.8, 2.x or 3.x deployment.
 */
const DB = 'telemetry';

/** The device, metric and severity the scenario gives something to show on every panel. */
const VALUES: VariableValues = {
  one: { tenant: ['acme'], device: ['therm-02'], metric: ['temperature'], severity: ['critical'] },
  all: { tenant: SCENARIO_TENANTS, severity: ['critical', 'warning', 'info'] },
};

const datasources = loadDatasources();
let influx: InfluxDb;

beforeAll(async () => {
  influx = await startInfluxDb();
  await influx.createDatabase(DB);
  await influx.write(DB, scenarioLines(Date.now()));
});

afterAll(async () => {
  await influx?.dispose();
});

describe('dashboard InfluxQL on InfluxDB 1.x', () => {
  it('holds the scenario', async () => {
    const [result] = await influx.query('SHOW MEASUREMENTS', DB);
    expect(result?.series?.[0]?.values.flat().sort()).toEqual([
      'alerts',
      'device_status',
      'fleet_agg',
      'telemetry',
      'telemetry_agg',
    ]);
  });

  it('runs every panel, variable and annotation query without error and with data', async () => {
    const { failures, ran } = await runDashboardQueries(loadDashboards(), datasources, VALUES, {
      influxql: influxRunner(influx, DB),
    });
    expect(failures.map(formatFailure)).toEqual([]);
    // Four dashboards, three of them on InfluxDB: a collapse to a handful would mean queries went unread.
    expect(ran).toBeGreaterThan(40);
  });

  it('reports a syntax error, an empty result, an empty column and a variable without the value in its fixture', async () => {
    const file = 'test/dashboards/fixtures/broken-queries.json';
    const { failures, ran } = await runDashboardQueries([loadDashboard(file)], datasources, VALUES, {
      influxql: influxRunner(influx, DB),
    });
    expect(ran).toBe(5);
    expect(failures.map((f) => [f.where.replace(`${file}: `, ''), f.problem])).toEqual([
      [
        'panel "Syntax error" (id 1) target A',
        expect.stringMatching(/^error: error parsing query: found GROUP, expected identifier/),
      ],
      ['panel "Nothing there" (id 2) target A', 'empty result'],
      ['panel "Misspelt field beside good ones" (id 7) target A', 'no values in "p95"'],
      ['variable device', 'offers gw-07, therm-01, not therm-02'],
    ]);
    expect(failures[1]!.query).toBe(
      `SELECT mean("mean") FROM "telemetry_agg" WHERE "device" =~ /^therm-02$/ AND "window" = '5m' AND time > now() - 1h GROUP BY time(10s)`,
    );
  });
});
