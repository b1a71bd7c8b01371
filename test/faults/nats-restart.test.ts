import { afterAll, beforeAll, expect, it } from 'vitest';
import { RunStats } from '../../simulators/progress.js';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline, until } from './kit/pipeline.js';

/**
 * Drill 2: nats-server stopped for 10 s and started again on the same store and port. The gateway
 * stays up, says it is not ready, acknowledges nothing while NATS is away (its devices keep their
 * publishes), and recovers by itself; the processors reconnect and carry on from their checkpoints.
 */
const OUTAGE_MS = 10_000;
let pipeline: Pipeline;

beforeAll(async () => {
  // Longer than the outage, so no device's windows close on wall time while its readings are held.
  pipeline = await startPipeline({ idleTimeout: '25s' });
});

afterAll(async () => {
  await pipeline?.dispose();
});

const status = (path: string) =>
  fetch(`http://127.0.0.1:${pipeline.gateway.httpPort}${path}`).then(
    (r) => r.status,
    () => 0,
  );

it('drill 2: nats-server down 10 s and restarted: gateway withholds acks, stays up, recovers by itself', async () => {
  const stats = new RunStats();
  const during = { ackedAtStop: -1, ackedBeforeRestart: -1, healthz: 0, readyz: 0 };
  const outcome = await runDrill({
    name: 'nats-restart',
    pipeline,
    seed: 1002,
    stats,
    fault: async () => {
      await sleep(6_000);
      const stoppedAt = Date.now();
      await pipeline.nats.stop();
      await until(async () => (await status('/readyz')) === 503, 'the gateway to report NATS missing');
      // PubAcks already received when NATS went may still turn into PUBACKs for a moment.
      await sleep(500);
      during.ackedAtStop = stats.acked;
      await sleep(Math.max(0, stoppedAt + OUTAGE_MS - Date.now()));
      during.ackedBeforeRestart = stats.acked;
      during.healthz = await status('/healthz');
      during.readyz = await status('/readyz');
      await pipeline.nats.restart();
      await pipeline.gateway.ready();
    },
  });
  expectExact(outcome, pipeline);
  expect(during.ackedAtStop).toBeGreaterThan(0);
  expect(during.ackedBeforeRestart).toBe(during.ackedAtStop);
  expect(during.healthz).toBe(200);
  expect(during.readyz).toBe(503);
  // The same process all along: it recovered without a restart.
  expect(pipeline.gateway.running).toBe(true);
});
