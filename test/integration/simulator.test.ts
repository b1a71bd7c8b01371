import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import type { Gateway } from '../../gateway/gateway.js';
import { type ProcessorConfig, ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessor, type Processor } from '../../processors/processor.js';
import { type RunResult, runSimulation, verifyLedger } from '../../simulators/index.js';
import { startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

/**
 * gateway + processor + simulator, every fault kind on, and the ledger verified against the TSDB
 * and DEADLETTER; then one device's raw series deleted, and verify must say so.
 */
let nats: NatsServer;
let tsdb: Tsdb;
let gateway: Gateway;
let processor: Processor;
let processorConfig: ProcessorConfig;
let dir: string;
let run: RunResult;
const ledgerPath = () => join(dir, 'ledger.jsonl');

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  ({ gateway } = await startGateway(nats.url));
  dir = await mkdtemp(join(tmpdir(), 'simulator-'));
  processorConfig = loadConfig(ProcessorConfigSchema, {
    NATS_URL: nats.url,
    INFLUX_URL: tsdb.url,
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    WINDOWS: '10s,1m',
    ALLOWED_LATENESS: '5s',
    // Longer than any silence of a device that still sends (churn downtime ≤ 2 s plus reconnect),
    // short enough that the run's last windows close soon after it ends.
    IDLE_TIMEOUT: '6s',
    CHECKPOINT_INTERVAL: '200ms',
    LEASE_TTL: '3s',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  });
  processor = await startProcessor();
}, 60_000);

const startProcessor = () =>
  createProcessor(processorConfig, createLogger('processors', processorConfig.LOG_LEVEL));

afterAll(async () => {
  await processor?.close();
  await gateway?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const verify = (waitMs: number, ledger = ledgerPath()) =>
  verifyLedger({ ledger, wait: waitMs, nats: nats.url, influxUrl: tsdb.url, rows: 30 });

const allFaults = {
  invalid: 5,
  duplicates: 5,
  late: 5,
  outOfOrder: 5,
  fahrenheit: 20,
  churn: 40,
  offline: 10,
} as const;

describe('simulator → gateway → processors → TSDB', () => {
  it('verifies exactly: every acknowledged reading stored once, every invalid one dead-lettered', async () => {
    run = await runSimulation({
      url: `mqtt://127.0.0.1:${gateway.ports.mqtt}`,
      nats: nats.url,
      devices: 200,
      rate: 2,
      batch: 2,
      duration: '12s',
      seed: 20261128,
      schema: 'mixed',
      encoding: 'mixed',
      ...allFaults,
      ledger: ledgerPath(),
      progress: 'none',
    });
    const t = run.ledger.totals;
    expect(run.summary.connectedDevices).toBe(200);
    expect(t.unacked).toBe(0);
    // Every fault kind happened.
    expect(Object.keys(t.invalidAcked).length).toBeGreaterThan(3);
    for (const n of [
      t.duplicatesAcked,
      t.late,
      t.outOfOrder,
      t.fahrenheit,
      t.churnReconnects,
      t.offlineDevices,
      t.cborAcked,
    ])
      expect(n).toBeGreaterThan(0);
    // Each encoding carried a good part of the publishes.
    expect(t.cborAcked / t.acked).toBeGreaterThan(0.3);
    expect(t.cborAcked / t.acked).toBeLessThan(0.7);

    const result = await verify(40_000);
    if (result.exitCode !== 0) console.error(result.text);
    expect(result.exitCode).toBe(0);
    expect(result.report.exact).toBe(true);
    expect(result.tsdb).toBe('victoria');
    expect(result.report.raw.expectedWindows).toBeGreaterThan(1_000);
    expect(result.report.deadLetters?.exact).toBe(true);
  }, 90_000);

  it('fails when a device’s raw data is removed from the TSDB', async () => {
    const victim = run.ledger.devices.find((d) => d.readings > 0)!.device;
    const match = `{__name__=~"telemetry_.+",device="${victim}",window=""}`;
    const res = await fetch(
      `${tsdb.url}/api/v1/admin/tsdb/delete_series?${new URLSearchParams({ 'match[]': match })}`,
      {
        method: 'POST',
      },
    );
    expect(res.status).toBe(204);
    const result = await verify(0);
    expect(result.exitCode).toBe(1);
    expect(result.report.differences).toContainEqual(
      expect.objectContaining({ source: 'raw', kind: 'missing-device', device: victim }),
    );
    // The aggregates were not touched: only the raw data is reported.
    expect(result.report.differences.every((d) => d.source === 'raw' && d.device === victim)).toBe(true);
    expect(result.text).toMatch(/DIFFERENT/);
  }, 30_000);

  it('verifies exactly across a processor restart in the middle of the run', async () => {
    const ledger = join(dir, 'restart.jsonl');
    let restarted: Promise<void> | undefined;
    const restart = async () => {
      await processor.close();
      processor = await startProcessor();
    };
    const result = await runSimulation(
      {
        url: `mqtt://127.0.0.1:${gateway.ports.mqtt}`,
        nats: nats.url,
        devices: 150,
        rate: 2,
        batch: 2,
        duration: '12s',
        seed: 7,
        ...allFaults,
        ledger,
        progress: 'none',
      },
      {
        onSending: () => {
          setTimeout(() => {
            restarted = restart();
          }, 5_000);
        },
      },
    );
    expect(result.ledger.totals.unacked).toBe(0);
    await restarted;
    const verified = await verify(40_000, ledger);
    if (verified.exitCode !== 0) console.error(verified.text);
    expect(verified.exitCode).toBe(0);
    expect(verified.report.exact).toBe(true);
    // The new instance replayed the open windows: VictoriaMetrics keeps the rewritten raw samples
    // beside the first ones, and verify counts each once.
    expect(verified.report.raw.replayed).toBeGreaterThan(0);
  }, 90_000);
});
