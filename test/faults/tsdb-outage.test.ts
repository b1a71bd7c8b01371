import { afterAll, beforeAll, expect, it } from 'vitest';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline, until } from './kit/pipeline.js';

/**
 * Drill 4: the TSDB down for 30 s mid-stream (stopped, then started again on the same data dir and
 * port). The processors keep their results pending and acknowledge nothing past what was written,
 * retry, and once it is back write everything: the aggregates come out exact.
 *
 * The fleet is larger here (1,000 readings/s) so that the pending lines pass the writer's high-water
 * mark well before the TSDB returns and the partitions stop pulling for longer than IDLE_TIMEOUT:
 * that is when this drill first found readings missing from the aggregates (the idle timeout took
 * the unread devices as quiet and closed their windows; see partition-consumer.ts).
 */
const OUTAGE_MS = 30_000;
const IDLE_TIMEOUT_MS = 6_000;
let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline({ idleTimeout: `${IDLE_TIMEOUT_MS}ms` });
});

afterAll(async () => {
  await pipeline?.dispose();
});

const readyz = async (port: number) => {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
  return res && ((await res.json()) as { missing?: string[] });
};

it('drill 4: TSDB down 30 s: processors hold, then catch up; aggregates exact', async () => {
  const [processor] = pipeline.processors as [(typeof pipeline.processors)[0]];
  const during = { retries: 0, running: false, overloadedMs: 0 };
  const outcome = await runDrill({
    name: 'tsdb-outage',
    pipeline,
    seed: 1004,
    devices: 200,
    rate: 5,
    duration: '30s',
    fault: async () => {
      await sleep(2_000);
      const stoppedAt = Date.now();
      await pipeline.tsdb.stop();
      // How long the processor says it stopped pulling (its writer past the high-water mark).
      while (Date.now() < stoppedAt + OUTAGE_MS) {
        const tick = Date.now();
        if ((await readyz(processor.httpPort))?.missing?.includes('tsdb')) during.overloadedMs += 500;
        await sleep(Math.max(0, tick + 500 - Date.now()));
      }
      during.retries = (await processor.metric('processor_tsdb_retries_total')) ?? 0;
      during.running = processor.running;
      await pipeline.tsdb.restart();
      await until(
        async () => (await processor.metric('processor_tsdb_pending_lines')) === 0,
        'the processor to write what it held',
        120_000,
      );
    },
  });
  expectExact(outcome, pipeline);
  // It held results rather than dropping them, kept trying, and stopped pulling while full.
  expect(during.running).toBe(true);
  expect(during.retries).toBeGreaterThan(0);
  expect(during.overloadedMs).toBeGreaterThan(0);
});
