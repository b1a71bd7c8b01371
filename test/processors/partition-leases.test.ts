import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { PartitionLeases } from '../../processors/leases/partition-leases.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const TTL_MS = 10_000;
const PARTITIONS = 16;
const log = createLogger('test', 'silent');

let nats: NatsServer;
let nc: NatsConnection;
let now = 1_800_000_000_000;
const clock = () => now;

interface Instance {
  leases: PartitionLeases;
  events: string[];
}

async function instance(
  id: string,
  onAcquire?: (p: number) => void,
  holderAlive?: () => boolean,
): Promise<Instance> {
  const events: string[] = [];
  const leases = await PartitionLeases.open(nc, {
    instanceId: id,
    group: 'partitions',
    partitions: PARTITIONS,
    ttlMs: TTL_MS,
    clock,
    log,
    holderAlive,
    onAcquire: (p) => {
      onAcquire?.(p);
      events.push(`+${p}`);
    },
    onRelease: (p, reason) => {
      events.push(`-${p}:${reason}`);
    },
  });
  return { leases, events };
}

/** Every partition is held by exactly one of the instances. */
function expectExclusive(...instances: Instance[]) {
  const all = instances.flatMap((i) => i.leases.partitions).sort((a, b) => a - b);
  expect(all).toEqual(Array.from({ length: PARTITIONS }, (_, p) => p));
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

beforeEach(async () => {
  // A fresh bucket per test: purge whatever the previous test left.
  const { Kvm } = await import('@nats-io/kv');
  await (await new Kvm(nc).create('processor_leases')).destroy().catch(() => undefined);
  now += 3_600_000;
});

describe('PartitionLeases', () => {
  it('gives a lone instance every partition, each acquired once', async () => {
    const a = await instance('a');
    await a.leases.rebalance();
    expect(a.leases.partitions).toHaveLength(PARTITIONS);
    await a.leases.rebalance();
    expect(a.events).toHaveLength(PARTITIONS);
    await a.leases.stop();
  });

  it('shares the partitions with a second instance, each held by one', async () => {
    const a = await instance('a');
    await a.leases.rebalance();
    const b = await instance('b');
    await b.leases.rebalance(); // nothing free yet
    expect(b.leases.partitions).toEqual([]);
    now += 1_000;
    await a.leases.rebalance(); // a sees two live instances and gives half back
    expect(a.leases.partitions).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(a.events.filter((e) => e.endsWith(':rebalance'))).toHaveLength(8);
    await b.leases.rebalance();
    expect(b.leases.partitions).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
    expectExclusive(a, b);
    await Promise.all([a.leases.stop(), b.leases.stop()]);
  });

  it('lets the survivor take a killed instance’s partitions once its leases expire', async () => {
    const a = await instance('a');
    const b = await instance('b');
    await a.leases.rebalance();
    await b.leases.rebalance();
    await a.leases.rebalance();
    await b.leases.rebalance();
    expectExclusive(a, b);
    // a is SIGKILLed: it stops renewing. Within the ttl nothing moves.
    now += TTL_MS - 1;
    await b.leases.rebalance();
    expect(b.leases.partitions).toHaveLength(8);
    now += 2;
    await b.leases.rebalance();
    expect(b.leases.partitions).toHaveLength(PARTITIONS);
    // If a was only paused and comes back, it finds its leases gone and stops on them.
    await a.leases.rebalance();
    expect(a.leases.partitions).toEqual([]);
    expect(a.events.filter((e) => e.endsWith(':lost'))).toHaveLength(8);
    await b.leases.stop();
  });

  it('keeps its leases while the bucket does not answer, and gives them up before they expire', async () => {
    const a = await instance('a');
    await a.leases.rebalance();
    // No stream behind the bucket: every write gets "no responders", as while a NATS cluster
    // elects the bucket's new leader after losing a node.
    await (await jetstreamManager(nc)).streams.delete('KV_processor_leases');
    now += 4_000;
    await a.leases.rebalance();
    expect(a.leases.partitions).toHaveLength(PARTITIONS);
    expect(a.events.filter((e) => e.startsWith('-'))).toEqual([]);
    // Less than a round (ttl / 3) left: stop before anyone may claim them.
    now += 4_000;
    await a.leases.rebalance();
    expect(a.leases.partitions).toEqual([]);
    expect(a.events.filter((e) => e.endsWith(':lost'))).toHaveLength(PARTITIONS);
    await a.leases.stop();
  });

  it('hands everything over at once on a clean stop', async () => {
    const a = await instance('a');
    const b = await instance('b');
    await a.leases.rebalance();
    await b.leases.rebalance();
    await a.leases.stop();
    expect(a.events.filter((e) => e.endsWith(':shutdown'))).toHaveLength(PARTITIONS);
    await b.leases.rebalance();
    expect(b.leases.partitions).toHaveLength(PARTITIONS);
    await b.leases.stop();
  });

  it('renews and claims nothing while its holder is silent: another instance takes over', async () => {
    let alive = true;
    const a = await instance('a', undefined, () => alive);
    const b = await instance('b');
    await a.leases.rebalance();
    await b.leases.rebalance();
    expect(a.leases.partitions).toHaveLength(PARTITIONS);
    // a's main thread stalls: its lease rounds go on, but renew and claim nothing.
    alive = false;
    now += TTL_MS / 3;
    await a.leases.rebalance();
    now += TTL_MS / 3;
    await a.leases.rebalance();
    expect(a.events.filter((e) => e.startsWith('-'))).toEqual([]);
    now += TTL_MS / 3 + 1;
    await b.leases.rebalance(); // a's heartbeat and leases have run out
    expect(b.leases.partitions).toHaveLength(PARTITIONS);
    // Back, a finds every lease taken.
    alive = true;
    await a.leases.rebalance();
    expect(a.leases.partitions).toEqual([]);
    expect(a.events.filter((e) => e.endsWith(':lost'))).toHaveLength(PARTITIONS);
    await Promise.all([a.leases.stop(), b.leases.stop()]);
  });

  it('keeps a lease nobody took while its holder was silent', async () => {
    let alive = true;
    const expiries = new Map<number, number>();
    const a = await PartitionLeases.open(nc, {
      instanceId: 'a',
      group: 'partitions',
      partitions: 1,
      ttlMs: TTL_MS,
      clock,
      log,
      holderAlive: () => alive,
      onExpiry: (p, at) => expiries.set(p, at),
      onAcquire: () => undefined,
      onRelease: () => undefined,
    });
    await a.rebalance();
    expect(expiries.get(0)).toBe(now + TTL_MS);
    alive = false;
    now += TTL_MS + 1;
    await a.rebalance();
    expect(expiries.get(0)).toBe(now - 1); // not renewed: run out, and the holder can see it
    alive = true;
    await a.rebalance(); // the compare-and-set succeeds: nobody wrote the lease since
    expect(a.partitions).toEqual([0]);
    expect(expiries.get(0)).toBe(now + TTL_MS);
    await a.stop();
    expect(expiries.get(0)).toBe(0);
  });

  it('gives a partition back when starting on it fails, and retries it later', async () => {
    let failOn: number | undefined = 3;
    const a = await instance('a', (p) => {
      if (p === failOn) throw new Error('consumer failed');
    });
    await a.leases.rebalance();
    expect(a.leases.partitions).not.toContain(3);
    failOn = undefined;
    await a.leases.rebalance();
    expect(a.leases.partitions).toContain(3);
    await a.leases.stop();
  });
});

describe('PartitionLeases under a slow start', () => {
  it('keeps renewing every round while a partition takes long to start', async () => {
    // Real time, short TTL: rounds every 300 ms. Starting partition 1 takes 3 TTLs; meanwhile the
    // lease on partition 0 must be renewed on time, so that a second instance never claims it.
    const ttlMs = 900;
    let startSlow!: () => void;
    const slow = new Promise<void>((r) => {
      startSlow = r;
    });
    const gaps: number[] = [];
    const a = await PartitionLeases.open(nc, {
      instanceId: 'a',
      group: 'partitions',
      partitions: 2,
      ttlMs,
      log,
      onAcquire: (p) => (p === 1 ? slow : undefined),
      onRelease: () => undefined,
      onRound: (r) => r.gapMs !== undefined && gaps.push(r.gapMs),
    });
    const taken: number[] = [];
    const b = await PartitionLeases.open(nc, {
      instanceId: 'b',
      group: 'partitions',
      partitions: 2,
      ttlMs,
      log,
      onAcquire: (p) => {
        taken.push(p);
      },
      onRelease: () => undefined,
    });
    a.start();
    await new Promise((r) => setTimeout(r, 3 * ttlMs));
    // b runs its own rounds only now: a's leases, renewed all along, are not free.
    await b.rebalance();
    expect(taken).toEqual([]);
    expect(a.partitions).toEqual([0]);
    startSlow();
    await expect.poll(() => a.partitions, { interval: 20, timeout: 2_000 }).toEqual([0, 1]);
    expect(Math.max(...gaps)).toBeLessThan(ttlMs * 0.75);
    await Promise.all([a.stop(), b.stop()]);
  });
});
