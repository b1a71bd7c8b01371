import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline, until } from './kit/pipeline.js';

/**
 * Drill 6: the gateway runs two workers (GATEWAY_WORKERS=2) and one of them is SIGKILLed mid-stream.
 * The devices it held lose their connections with publishes unacknowledged and reconnect, to the
 * other worker or to the one the primary starts again; whatever the killed worker had acknowledged
 * is in TELEMETRY, nothing is stored twice, and the primary counts the restart.
 */
let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline({ gatewayWorkers: 2 });
});

afterAll(async () => {
  // The workers by pid first: the primary's SIGKILL (in dispose) would leave them to drain alone.
  for (const pid of workersOf(pipeline?.gateway.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await pipeline?.dispose();
});

/** The primary's children: its workers (Linux /proc). */
function workersOf(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

it('drill 6: one of two gateway workers SIGKILLed mid-stream: restarted, every acknowledged reading stored once, aggregates exact', async () => {
  let killed: number | undefined;
  const outcome = await runDrill({
    name: 'gateway-worker-sigkill',
    pipeline,
    seed: 1006,
    // No deliberate duplicates: every duplicate is then a retransmission of something the killed
    // worker had stored.
    duplicates: 0,
    fault: async () => {
      await sleep(8_000);
      const workers = workersOf(pipeline.gateway.pid);
      expect(workers).toHaveLength(2);
      killed = workers[0];
      process.kill(killed!, 'SIGKILL');
      await until(
        async () => (await pipeline.gateway.metric('gateway_worker_restarts_total')) === 1,
        'the primary to count the restart',
      );
      await pipeline.gateway.ready();
    },
  });
  expectExact(outcome, pipeline);
  const workers = workersOf(pipeline.gateway.pid);
  expect(workers).toHaveLength(2);
  expect(workers).not.toContain(killed);
  // The devices on the killed worker noticed and came back.
  expect(outcome.run.ledger.totals.lostConnections).toBeGreaterThan(0);
});
