import { Worker } from 'node:worker_threads';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { PROCESSOR_LEASES_BUCKET } from '../../contract/subjects.js';
import { LeaseLapsedError } from '../../processors/errors.js';
import { fencedKv } from '../../processors/leases/fenced-kv.js';
import { LeaseBoard } from '../../processors/leases/lease-board.js';
import { LeaseKeeper } from '../../processors/leases/lease-keeper.js';
import type { LeaseRound } from '../../processors/leases/partition-leases.js';
import { natsClient } from '../kit/gateway.js';
import type { ContenderSetup } from '../kit/lease-contender.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const TTL_MS = 1_500;
const PARTITIONS = 4;
const GROUP = 'partitions';
const log = createLogger('test', 'silent');

let nats: NatsServer;
let nc: NatsConnection;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

beforeEach(async () => {
  await (await new Kvm(nc).create(PROCESSOR_LEASES_BUCKET)).destroy().catch(() => undefined);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Kept {
  keeper: LeaseKeeper;
  events: string[];
  rounds: LeaseRound[];
  held: () => number[];
}

async function keeper(id: string): Promise<Kept> {
  const events: string[] = [];
  const rounds: LeaseRound[] = [];
  const held = new Set<number>();
  const keeper = await LeaseKeeper.start({
    natsUrl: nats.url,
    instanceId: id,
    ttlMs: TTL_MS,
    replicas: 1,
    log,
    onRound: (_group, round) => rounds.push(round),
    groups: [
      {
        group: GROUP,
        partitions: PARTITIONS,
        onAcquire: (p) => {
          held.add(p);
          events.push(`+${p}`);
        },
        onRelease: (p, reason) => {
          held.delete(p);
          events.push(`-${p}:${reason}`);
        },
      },
    ],
  });
  cleanups.push(() => keeper.stop());
  return { keeper, events, rounds, held: () => [...held].sort((a, b) => a - b) };
}

interface Contender {
  acquired: Array<{ partition: number; at: number }>;
  held: () => number[];
}

/** Another instance's leases in a worker thread of their own: they go on while this thread is stalled. */
async function contender(id: string): Promise<Contender> {
  const setup: ContenderSetup = {
    url: nats.url,
    instanceId: id,
    group: GROUP,
    partitions: PARTITIONS,
    ttlMs: TTL_MS,
  };
  const entry = new URL('../kit/lease-contender.ts', import.meta.url).href;
  const worker = new Worker(
    `import('tsx/esm/api').then((tsx) => tsx.tsImport(${JSON.stringify(entry)}, ${JSON.stringify(import.meta.url)}));`,
    { eval: true, workerData: setup },
  );
  const acquired: Contender['acquired'] = [];
  const held = new Set<number>();
  await new Promise<void>((resolve, reject) => {
    worker.on('error', reject);
    worker.on('message', (m: { type: string; partition: number; at: number }) => {
      if (m.type === 'ready') resolve();
      if (m.type === 'acquired') {
        acquired.push(m);
        held.add(m.partition);
      }
      if (m.type === 'released') held.delete(m.partition);
    });
  });
  cleanups.push(async () => {
    const exited = new Promise((r) => worker.once('exit', r));
    worker.postMessage('stop');
    await exited;
  });
  return { acquired, held: () => [...held].sort((a, b) => a - b) };
}

/** Both hold half, as two live instances do. */
async function split(a: Kept, b: Contender): Promise<void> {
  await expect.poll(() => a.held().length, { interval: 20, timeout: 5_000 }).toBe(PARTITIONS / 2);
  await expect.poll(() => b.held().length, { interval: 20, timeout: 5_000 }).toBe(PARTITIONS / 2);
}

describe('LeaseKeeper', () => {
  it('keeps its leases through seconds of a busy main thread that still runs its loop', async () => {
    const a = await keeper('a');
    await expect.poll(() => a.held().length, { interval: 20, timeout: 5_000 }).toBe(PARTITIONS);
    const b = await contender('b');
    await split(a, b);
    const mine = a.held();
    const bAcquired = b.acquired.length;
    a.rounds.length = 0;

    // Two TTLs of 300 ms synchronous tasks back to back, as consumers at full load make (worse):
    // every timer of this thread fires up to 300 ms late, and each KV reply waits as long.
    const until = Date.now() + 2 * TTL_MS;
    while (Date.now() < until) {
      const chunk = Date.now() + 300;
      while (Date.now() < chunk) {
        /* busy */
      }
      await new Promise((r) => setImmediate(r));
    }

    expect(a.events.filter((e) => e.endsWith(':lost'))).toEqual([]);
    expect(a.held()).toEqual(mine);
    expect(b.acquired).toHaveLength(bAcquired);
    for (const p of mine) expect(a.keeper.holds(GROUP, p)).toBe(true);
    // Renewals kept their rate, TTL/3, in the worker (timer and reply jitter aside).
    const gaps = a.rounds.map((r) => r.gapMs ?? 0);
    expect(gaps.length).toBeGreaterThanOrEqual(4);
    expect(Math.max(...gaps)).toBeLessThan(TTL_MS / 2);
  });

  it('loses its leases when its main thread is stuck past the TTL, and cannot write for them after', async () => {
    const a = await keeper('a');
    await expect.poll(() => a.held().length, { interval: 20, timeout: 5_000 }).toBe(PARTITIONS);
    const b = await contender('b');
    await split(a, b);
    const mine = a.held();
    const checkpoints: KV = await new Kvm(nc).create('lease_keeper_test', { history: 1 });
    cleanups.push(() => checkpoints.destroy());

    // One synchronous task of three TTLs: a stuck loop. The worker stops renewing once this thread
    // has been silent for TTL/2, the leases run out, and the other instance takes them meanwhile.
    const until = Date.now() + 3 * TTL_MS;
    while (Date.now() < until) {
      /* stuck */
    }

    // Awake, and before any message from the worker: this thread already knows it holds nothing,
    // so its consumers cannot checkpoint over the new owner's.
    for (const p of mine) {
      expect(a.keeper.holds(GROUP, p)).toBe(false);
      const fenced = fencedKv(checkpoints, `${GROUP}.${p}`, () => a.keeper.holds(GROUP, p));
      await expect(fenced.put(`partition.${p}`, 'zombie')).rejects.toBeInstanceOf(LeaseLapsedError);
    }
    await expect.poll(() => b.held(), { interval: 20, timeout: 5_000 }).toEqual([0, 1, 2, 3]);
    // The worker's next renewal finds them taken and stops the work on them.
    await expect
      .poll(() => a.events.filter((e) => e.endsWith(':lost')).sort(), { interval: 20, timeout: 5_000 })
      .toEqual(mine.map((p) => `-${p}:lost`).sort());
    expect(a.held()).toEqual([]);
    expect(await checkpoints.get(`partition.${mine[0]}`)).toBeNull();
  });
});

describe('LeaseKeeper whose worker dies', () => {
  it('stops the work at once, reports it, and claims again with a new worker', async () => {
    const a = await keeper('a');
    await expect.poll(() => a.held().length, { interval: 20, timeout: 5_000 }).toBe(PARTITIONS);
    await (a.keeper as unknown as { worker: Worker }).worker.terminate();
    // Nothing renews the leases any more: the work stops without waiting for them to run out.
    await expect.poll(() => a.held(), { interval: 20, timeout: 2_000 }).toEqual([]);
    expect(a.events.filter((e) => e.endsWith(':lost'))).toHaveLength(PARTITIONS);
    expect(a.keeper.notKept).toMatch(/lease worker exited/);
    for (let p = 0; p < PARTITIONS; p++) expect(a.keeper.holds(GROUP, p)).toBe(false);
    // A new worker claims them back once the old leases have run out.
    await expect.poll(() => a.held().length, { interval: 50, timeout: 3 * TTL_MS + 2_000 }).toBe(PARTITIONS);
    expect(a.keeper.notKept).toBeUndefined();
  });
});

describe('LeaseBoard', () => {
  it('shares the main thread’s tick and each lease’s expiry', () => {
    const board = new LeaseBoard([
      { group: 'partitions', partitions: 16 },
      { group: 'roles', partitions: 2 },
    ]);
    const seen = new LeaseBoard(board.groups, board.buffer); // the worker's view of the same memory
    board.tick(1_800_000_000_123);
    expect(seen.lastTick()).toBe(1_800_000_000_123);
    seen.setExpiry('roles', 1, 1_800_000_010_000);
    seen.setExpiry('partitions', 15, 1_800_000_009_000);
    expect(board.expiry('roles', 1)).toBe(1_800_000_010_000);
    expect(board.expiry('roles', 0)).toBe(0);
    expect(board.expiry('partitions', 15)).toBe(1_800_000_009_000);
    board.clearLeases();
    expect(seen.expiry('roles', 1)).toBe(0);
    expect(board.lastTick()).toBe(1_800_000_000_123);
    expect(() => board.expiry('roles', 2)).toThrow(RangeError);
    expect(() => board.expiry('other', 0)).toThrow(RangeError);
  });
});
