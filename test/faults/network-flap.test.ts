import { afterAll, beforeAll, expect, it } from 'vitest';
import { RunStats } from '../../simulators/progress.js';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline } from './kit/pipeline.js';

/**
 * Drill 5: the network between the gateway and NATS flaps, through a TCP proxy the drill controls:
 * the link is cut (connections reset, reconnects refused) for 4 s, then stalls (open, nothing
 * carried) for 8 s, longer than the gateway's 5 s JetStream ack timeout, so publishes are sent again
 * and both copies arrive once it recovers, then is cut again for 2 s. Nothing may be lost or stored twice.
 */
let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline({ gatewayViaProxy: true, idleTimeout: '20s' });
});

afterAll(async () => {
  await pipeline?.dispose();
});

it('drill 5: network flaps between gateway and NATS: nothing lost, nothing doubled', async () => {
  const proxy = pipeline.proxy!;
  const acceptedBefore = proxy.accepted;
  const stats = new RunStats();
  const stall = { ackedAtStart: -1, ackedAtEnd: -1, retries: 0 };
  const outcome = await runDrill({
    name: 'network-flap',
    pipeline,
    seed: 1005,
    duration: '30s',
    stats,
    fault: async () => {
      await sleep(5_000);
      await proxy.cut(4_000);
      await pipeline.gateway.ready();
      await sleep(2_000);
      const stalled = proxy.stall(8_000);
      // PubAcks already on their way when the link stalled may still become PUBACKs.
      await sleep(500);
      stall.ackedAtStart = stats.acked;
      await sleep(7_000);
      stall.ackedAtEnd = stats.acked;
      stall.retries = (await pipeline.gateway.metric('gateway_jetstream_retries_total')) ?? 0;
      await stalled;
      await sleep(2_000);
      await proxy.cut(2_000);
      await pipeline.gateway.ready();
    },
  });
  expectExact(outcome, pipeline);
  // The stall held every acknowledgement back, and the gateway sent its unanswered publishes again.
  expect(stall.ackedAtStart).toBeGreaterThan(0);
  expect(stall.ackedAtEnd).toBe(stall.ackedAtStart);
  expect(stall.retries).toBeGreaterThan(0);
  // The gateway reconnected through the proxy after each cut, and was never restarted.
  expect(proxy.accepted).toBeGreaterThanOrEqual(acceptedBefore + 2);
  expect(pipeline.gateway.running).toBe(true);
});
