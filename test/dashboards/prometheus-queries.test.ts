import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WindowResult } from '../../processors/windows/device-windows.js';
import { startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';
import { loadDashboard, loadDashboards, loadDatasources } from './dashboards.js';
import { formatFailure, prometheusRunner, runDashboardQueries } from './run-queries.js';
import { createRegistries } from './schema.js';

/**
 * Every PromQL expression of the dashboards on a real PromQL engine: VictoriaMetrics (the same
 * Debian binary the other tests use) loaded with scrapes of the gateway's and the processors' own
 * registries — the text their /metrics serve — taken 15 s apart over the last minute. Between scrapes
 * the test moves every counter, gauge and histogram the dashboards chart, so an empty answer means a
 * wrong name or label, never a metric that happened not to move.
 */
const SCRAPE_INTERVAL_MS = 15_000;
const SCRAPES = 4;

type Registries = ReturnType<typeof createRegistries>;

function windowResult(windowMs: number, final: boolean): WindowResult {
  return {
    tenant: 't',
    deviceId: 'd',
    metric: 'm',
    windowMs,
    startMs: 0,
    final,
    values: {} as WindowResult['values'],
  };
}

/** One scrape interval's worth of activity on every series the dashboards chart. */
function activity({ gateway, processor }: Registries, round: number): void {
  for (let i = 0; i < 20; i++) {
    gateway.publish('acked', 1);
    gateway.event('stored');
    gateway.ackLatency(0.001 * (i + 1));
    processor.tsdbWritten(5 + i, 100 + 10 * i);
  }
  gateway.publish('not_stored', 1);
  gateway.publish('denied', 0);
  gateway.event('duplicate');
  gateway.event('dropped');
  gateway.deadletter('PAYLOAD_NOT_JSON');
  gateway.deadletter('UNIT_UNKNOWN');
  gateway.retries.labels('timeout').inc();
  gateway.connects.labels('accepted').inc();
  processor.events(200);
  processor.late(1);
  processor.duplicates(2);
  processor.invalid(1);
  processor.windowsEmitted([
    windowResult(10_000, false),
    windowResult(10_000, true),
    windowResult(60_000, true),
  ]);
  processor.checkpointed(0, 100 * round);
  processor.fleetRows(6);
  processor.fleetSkipped(1);
  processor.role('fleet-rollup', true);
  processor.role('presence', true);
  processor.tsdbRetry();
  processor.tsdbRejected(2);
}

/** Exposition text with each sample stamped at `atMs`, as a scrape at that time would store it. */
function stamped(text: string, atMs: number): string {
  return text
    .split('\n')
    .map((line) => (line === '' || line.startsWith('#') ? line : `${line} ${atMs}`))
    .join('\n');
}

let vm: Tsdb;
let nowMs: number;

beforeAll(async () => {
  vm = await startVictoriaMetrics();
  const registries = createRegistries();
  nowMs = Date.now();
  for (let round = 1; round <= SCRAPES; round++) {
    activity(registries, round);
    const atMs = nowMs - (SCRAPES - round + 1) * SCRAPE_INTERVAL_MS;
    for (const [job, registry] of [
      ['gateway', registries.gateway.registry],
      ['processors', registries.processor.registry],
    ] as const) {
      // Prometheus adds job and instance to every scraped series; the dashboards may group by them.
      const params = new URLSearchParams([
        ['extra_label', `job=${job}`],
        ['extra_label', `instance=${job}:1`],
      ]);
      const res = await fetch(`${vm.url}/api/v1/import/prometheus?${params}`, {
        method: 'POST',
        body: stamped(await registry.metrics(), atMs),
      });
      if (res.status !== 204) throw new Error(`import failed: ${res.status} ${await res.text()}`);
    }
  }
  await vm.settle();
});

afterAll(async () => {
  await vm?.dispose();
});

describe('dashboard PromQL on a PromQL engine', () => {
  const datasources = loadDatasources();
  const values = { one: {}, all: {} };

  it('runs every expression without error and with data', async () => {
    const { failures, ran } = await runDashboardQueries(loadDashboards(), datasources, values, {
      promql: prometheusRunner(vm.url, nowMs / 1000),
    });
    expect(failures.map(formatFailure)).toEqual([]);
    expect(ran).toBeGreaterThan(25);
  });

  it('reports a syntax error and an expression with nothing there in its own fixture', async () => {
    const file = 'test/dashboards/fixtures/broken-queries.json';
    const { failures, ran } = await runDashboardQueries([loadDashboard(file)], datasources, values, {
      promql: prometheusRunner(vm.url, nowMs / 1000),
    });
    expect(ran).toBe(3);
    expect(failures.map((f) => [f.where.replace(`${file}: `, ''), f.problem])).toEqual([
      ['panel "PromQL syntax error" (id 4) target A', expect.stringMatching(/^error: .*unexpected/)],
      ['panel "PromQL with nothing there" (id 5) target A', 'empty result'],
    ]);
  });
});
