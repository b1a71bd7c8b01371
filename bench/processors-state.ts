import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { parseDuration } from '../common/duration.js';
import {
  PROCESSOR_CHECKPOINTS_BUCKET,
  PROCESSOR_LEASES_BUCKET,
  TELEMETRY_PARTITIONS,
  TELEMETRY_STREAM,
  WINDOWS_STREAM,
} from '../contract/subjects.js';
import { DEFAULT_LEASE_TTL } from '../processors/config.js';
import { consumerName } from '../processors/consume/partition-consumer.js';
import { instanceKey } from './processors-leases.js';

const LEASE_TTL_MS = parseDuration(DEFAULT_LEASE_TTL)!;

/** Forgets what earlier processors did: their consumers, checkpoints, leases and heartbeats. */
export async function resetProcessorState(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for (let p = 0; p < TELEMETRY_PARTITIONS; p++) {
    await jsm.consumers.delete(TELEMETRY_STREAM, consumerName(p)).catch(() => undefined);
  }
  // The fleet rollup replays WINDOWS on start: rounds must not see each other's window emissions.
  await jsm.streams.purge(WINDOWS_STREAM).catch(() => undefined);
  const kvm = new Kvm(nc);
  for (const bucket of [PROCESSOR_CHECKPOINTS_BUCKET, PROCESSOR_LEASES_BUCKET]) {
    await kvm
      .open(bucket)
      .then((kv) => kv.destroy())
      .catch(() => undefined);
  }
}

/**
 * Instances started together do not split the partitions at once, by design of the fair share: the
 * first to run its lease round counts only itself, claims all 16 and is well into the stream before a
 * later round rebalances. Announcing every instance's heartbeat beforehand (the
 * `partitions.instance.{id}` entry PartitionLeases writes itself, partition-leases.ts) makes each
 * one's first round count them all and claim its fair share, so the round times the split from the
 * first event. The split is checked after the round.
 */
export async function announceInstances(nc: NatsConnection, ids: readonly string[]): Promise<void> {
  const kv = await new Kvm(nc).create(PROCESSOR_LEASES_BUCKET, { history: 1, replicas: 1 });
  for (const id of ids)
    await kv.put(instanceKey(id), JSON.stringify({ expiresAt: Date.now() + LEASE_TTL_MS }));
}
