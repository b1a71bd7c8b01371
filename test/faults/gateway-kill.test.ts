import { afterAll, beforeAll, expect, it } from 'vitest';
import { expectExact, runDrill } from './kit/drill.js';
import { type Pipeline, sleep, startPipeline, until } from './kit/pipeline.js';

/**
 * Drill 1: the gateway is SIGKILLed mid-stream and started again on the same ports. Its devices
 * lose their connections with publishes unacknowledged, reconnect and retransmit; whatever the
 * gateway had acknowledged before dying is in TELEMETRY, and nothing is stored twice.
 *
 * At a few hundred messages a second almost nothing is in flight at any instant, so the kill is
 * aimed: nats-server is paused (SIGSTOP) until the gateway holds publishes it has handed to NATS,
 * the gateway is killed, and nats-server resumes and stores them. Those events are stored but were
 * never acknowledged: the devices send them again to the new gateway, and JetStream's deduplication
 * must keep them single.
 */
let pipeline: Pipeline;

beforeAll(async () => {
  pipeline = await startPipeline();
});

afterAll(async () => {
  await pipeline?.dispose();
});

it('drill 1: gateway SIGKILL mid-stream, restarted: every acknowledged reading stored once, aggregates exact', async () => {
  const pids: (number | undefined)[] = [];
  let heldAtKill = 0;
  const outcome = await runDrill({
    name: 'gateway-sigkill',
    pipeline,
    seed: 1001,
    // No deliberate duplicates: every duplicate the new gateway sees is then a retransmission of
    // something the killed one had stored.
    duplicates: 0,
    fault: async () => {
      await sleep(8_000);
      pids.push(pipeline.gateway.pid);
      const natsPid = pipeline.nats.pid!;
      process.kill(natsPid, 'SIGSTOP');
      try {
        await until(async () => {
          heldAtKill = (await pipeline.gateway.metric('gateway_jetstream_in_flight')) ?? 0;
          return heldAtKill >= 20;
        }, 'the gateway to hold publishes');
        await pipeline.gateway.kill('SIGKILL');
      } finally {
        process.kill(natsPid, 'SIGCONT');
      }
      await pipeline.gateway.restart();
      pids.push(pipeline.gateway.pid);
    },
  });
  expectExact(outcome, pipeline);
  expect(pids[1]).not.toBe(pids[0]);
  expect(heldAtKill).toBeGreaterThanOrEqual(20);
  const t = outcome.run.ledger.totals;
  // Every device noticed the kill and came back to the new gateway, sending again what it had in flight.
  expect(t.lostConnections).toBeGreaterThanOrEqual(outcome.run.summary.devices);
  expect(t.retransmissions).toBeGreaterThanOrEqual(heldAtKill);
  // Some of them had been stored by the killed gateway (nats-server took them in once resumed):
  // JetStream answered the new gateway's copies as duplicates, and nothing was stored twice.
  expect(await pipeline.gateway.metric('gateway_events_total', 'outcome="duplicate"')).toBeGreaterThan(0);
});
