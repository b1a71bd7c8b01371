import { afterAll, beforeAll, expect, it } from 'vitest';
import { TELEMETRY_PARTITIONS } from '../../contract/index.js';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline, until } from './kit/pipeline.js';

/**
 * Drill 3: one of two processor instances SIGKILLed mid-stream. Its leases expire, the survivor
 * takes its partitions and replays them from their checkpoints; the aggregates come out exact,
 * with no reading counted twice.
 */
let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline({ processors: 2, idleTimeout: '10s' });
});

afterAll(async () => {
  await pipeline?.dispose();
});

it('drill 3: one of two processors SIGKILLed: partitions taken over, aggregates exact', async () => {
  const [victim, survivor] = pipeline.processors as [
    (typeof pipeline.processors)[0],
    (typeof pipeline.processors)[0],
  ];
  const owned = { victimBefore: 0, survivorBefore: 0, survivorAfter: 0 };
  const outcome = await runDrill({
    name: 'processor-sigkill',
    pipeline,
    seed: 1003,
    fault: async () => {
      await until(async () => {
        const [a, b] = await Promise.all([
          victim.metric('processor_owned_partitions'),
          survivor.metric('processor_owned_partitions'),
        ]);
        owned.victimBefore = a ?? 0;
        owned.survivorBefore = b ?? 0;
        return a === TELEMETRY_PARTITIONS / 2 && b === TELEMETRY_PARTITIONS / 2;
      }, 'the partitions split between the two instances');
      await sleep(8_000);
      await victim.kill('SIGKILL');
      await until(
        async () => (await survivor.metric('processor_owned_partitions')) === TELEMETRY_PARTITIONS,
        'the survivor to take every partition',
      );
      owned.survivorAfter = TELEMETRY_PARTITIONS;
    },
  });
  expectExact(outcome, pipeline);
  expect(owned).toEqual({
    victimBefore: TELEMETRY_PARTITIONS / 2,
    survivorBefore: TELEMETRY_PARTITIONS / 2,
    survivorAfter: TELEMETRY_PARTITIONS,
  });
  expect(victim.running).toBe(false);
  // The survivor replayed the victim's open windows from its checkpoints: raw samples written again.
  expect(outcome.verified.report.raw.replayed).toBeGreaterThan(0);
});
