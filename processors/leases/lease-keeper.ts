import { Worker } from 'node:worker_threads';
import { type LogFormat, type Logger, resolveLogFormat } from '../../common/logger.js';
import { type BoardGroup, LeaseBoard } from './lease-board.js';
import type { LeaseRound } from './partition-leases.js';

/**
 * Keeps the processor's leases (partitions and roles) in a worker thread of its own, with its own
 * NATS connection, so that their renewals keep time whatever the main thread is busy with: on the
 * main thread a renewal's timer and each KV reply wait for the event loop, which the consumers keep
 * busy under load.
 *
 * The work stays on the main thread. The worker asks it to start or stop a partition (onAcquire,
 * onRelease) and waits for the answer, as PartitionLeases does. Two things keep one owner per
 * partition while the threads no longer share an event loop:
 * - the main thread ticks a shared clock every `ttl/10`; when it has been silent for `ttl/2` (a long
 *   synchronous task, a stuck loop), the worker stops renewing and claiming, so that a main thread
 *   that cannot show it is alive loses its leases as a killed process would;
 * - the worker publishes each lease's expiry in shared memory, and `holds()` reads it without a
 *   message (that would wait for the busy loop): work that must not outlive its lease (a partition's
 *   checkpoint, its restart) checks `holds()` first, so a main thread waking after its leases ran
 *   out cannot act on them before it hears that they are gone.
 */
export interface KeptGroup extends BoardGroup {
  onAcquire: (partition: number) => Promise<void> | void;
  onRelease: (partition: number, reason: 'rebalance' | 'lost' | 'shutdown') => Promise<void> | void;
}

export interface LeaseKeeperOptions {
  natsUrl: string;
  instanceId: string;
  ttlMs: number;
  replicas: number;
  log: Logger;
  /** LOG_FORMAT: the worker's own logger writes as the main thread's does (its stdout is no terminal). */
  logFormat?: LogFormat;
  groups: readonly KeptGroup[];
  onRound?: (group: string, round: LeaseRound) => void;
}

/** What the worker is started with (workerData). */
export interface WorkerSetup {
  natsUrl: string;
  instanceId: string;
  ttlMs: number;
  replicas: number;
  logLevel: string;
  logFormat: 'json' | 'pretty';
  silentAfterMs: number;
  groups: BoardGroup[];
  board: SharedArrayBuffer;
}

export type ToMain =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'acquire'; id: number; group: string; partition: number }
  | {
      type: 'release';
      id: number;
      group: string;
      partition: number;
      reason: 'rebalance' | 'lost' | 'shutdown';
    }
  | { type: 'round'; group: string; round: LeaseRound };

export type ToWorker = { type: 'reply'; id: number; error?: string } | { type: 'stop' };

/** How often the main thread shows it is alive, and how long a silence stops the renewals. */
export const livenessTickMs = (ttlMs: number) => Math.max(20, Math.floor(ttlMs / 10));
export const silentAfterMs = (ttlMs: number) => Math.floor(ttlMs / 2);
/**
 * How much of a lease must be left for `holds()`: a checkpoint sent now must land before anyone else
 * can claim the lease (clock skew, the write's own latency).
 */
export const holdMarginMs = (ttlMs: number) => Math.floor(ttlMs / 6);
/** A worker that died is replaced after this long (its leases lapse meanwhile). */
const RESPAWN_DELAY_MS = 1_000;

function spawnWorker(setup: WorkerSetup): Worker {
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    // Run by tsx (npm scripts, the image, vitest): a worker does not inherit its loader, so the
    // worker's entry loads it itself.
    const tsx = import.meta.resolve?.('tsx/esm/api') ?? 'tsx/esm/api';
    const entry = new URL('./lease-worker.ts', self).href;
    const code = `import(${JSON.stringify(tsx)}).then((tsx) => tsx.tsImport(${JSON.stringify(entry)}, ${JSON.stringify(self)}));`;
    return new Worker(code, {
      eval: true,
      workerData: setup,
    });
  }
  return new Worker(new URL('./lease-worker.js', self), { workerData: setup });
}

export class LeaseKeeper {
  private readonly board: LeaseBoard;
  private readonly ticker: NodeJS.Timeout;
  /** Partitions whose onAcquire completed and onRelease did not begin, by group. */
  private readonly running = new Map<string, Set<number>>();
  private worker: Worker | undefined;
  private stopping = false;
  private respawn: NodeJS.Timeout | undefined;
  private problem: string | undefined;

  private constructor(private readonly o: LeaseKeeperOptions) {
    this.board = new LeaseBoard(o.groups.map(({ group, partitions }) => ({ group, partitions })));
    for (const g of o.groups) this.running.set(g.group, new Set());
    this.board.tick(Date.now());
    this.ticker = setInterval(() => this.board.tick(Date.now()), livenessTickMs(o.ttlMs));
  }

  /** Starts the worker; resolves once it is connected and its rounds run. */
  static async start(o: LeaseKeeperOptions): Promise<LeaseKeeper> {
    const keeper = new LeaseKeeper(o);
    try {
      await keeper.spawn();
    } catch (err) {
      await keeper.stop();
      throw err;
    }
    return keeper;
  }

  /** True while the lease on `partition` runs for longer than the hold margin. */
  holds(group: string, partition: number): boolean {
    return this.board.expiry(group, partition) - Date.now() > holdMarginMs(this.o.ttlMs);
  }

  /** Why the leases are not being kept (the worker died and is being replaced), or undefined. */
  get notKept(): string | undefined {
    return this.problem;
  }

  /** Gives every lease back (after onRelease) and ends the worker. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.respawn);
    const worker = this.worker;
    if (worker) {
      const exited = new Promise((r) => worker.once('exit', r));
      worker.postMessage({ type: 'stop' } satisfies ToWorker);
      await exited;
    }
    clearInterval(this.ticker);
  }

  private spawn(): Promise<void> {
    const setup: WorkerSetup = {
      natsUrl: this.o.natsUrl,
      instanceId: this.o.instanceId,
      ttlMs: this.o.ttlMs,
      replicas: this.o.replicas,
      logLevel: this.o.log.level,
      logFormat: resolveLogFormat(this.o.logFormat ?? 'json'),
      silentAfterMs: silentAfterMs(this.o.ttlMs),
      groups: this.o.groups.map(({ group, partitions }) => ({ group, partitions })),
      board: this.board.buffer,
    };
    const worker = spawnWorker(setup);
    this.worker = worker;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      worker.on('message', (m: ToMain) => {
        switch (m.type) {
          case 'ready':
            started = true;
            this.problem = undefined;
            resolve();
            return;
          case 'failed':
            reject(new Error(`lease worker could not start: ${m.message}`));
            return;
          case 'round':
            this.o.onRound?.(m.group, m.round);
            return;
          default:
            void this.handle(worker, m);
        }
      });
      worker.on('error', (err) => {
        this.o.log.error({ err }, 'lease worker failed');
        if (!started) reject(err);
      });
      worker.on('exit', (code) => {
        if (!started) reject(new Error(`lease worker exited with code ${code} before it started`));
        if (this.worker === worker) this.worker = undefined;
        if (started && !this.stopping) void this.replace(code);
      });
    });
  }

  /** The worker died: nothing renews the leases any more, so the work stops and a new worker claims again. */
  private async replace(code: number): Promise<void> {
    this.problem = `lease worker exited (code ${code})`;
    this.o.log.error({ code }, 'lease worker exited: stopping every partition and role, then restarting it');
    this.board.clearLeases();
    for (const g of this.o.groups) {
      const running = this.running.get(g.group)!;
      for (const p of [...running]) {
        running.delete(p);
        await Promise.resolve(g.onRelease(p, 'lost')).catch((err: unknown) =>
          this.o.log.error(
            { err, group: g.group, partition: p },
            'could not stop after the lease worker died',
          ),
        );
      }
    }
    if (this.stopping) return;
    this.respawn = setTimeout(() => {
      if (!this.stopping)
        this.spawn().catch((err: unknown) => {
          this.o.log.error({ err }, 'lease worker could not restart');
          void this.replace(-1);
        });
    }, RESPAWN_DELAY_MS);
  }

  private async handle(worker: Worker, m: Extract<ToMain, { type: 'acquire' | 'release' }>): Promise<void> {
    const group = this.o.groups.find((g) => g.group === m.group);
    const running = this.running.get(m.group);
    let error: string | undefined;
    try {
      if (!group || !running) throw new Error(`unknown lease group ${m.group}`);
      if (m.type === 'acquire') {
        await group.onAcquire(m.partition);
        if (this.worker !== worker) {
          // The worker died meanwhile: nobody renews this lease.
          await group.onRelease(m.partition, 'lost');
          return;
        }
        running.add(m.partition);
      } else {
        running.delete(m.partition);
        await group.onRelease(m.partition, m.reason);
      }
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    worker.postMessage({
      type: 'reply',
      id: m.id,
      ...(error === undefined ? {} : { error }),
    } satisfies ToWorker);
  }
}
