import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../../common/logger.js';
import { connectNats } from '../../common/nats.js';
import { LeaseBoard } from './lease-board.js';
import type { ToMain, ToWorker, WorkerSetup } from './lease-keeper.js';
import { PartitionLeases } from './partition-leases.js';

/**
 * The lease worker's entry (started by LeaseKeeper): one PartitionLeases per group on a NATS
 * connection of its own; the work they guard is the main thread's, reached by messages.
 */
const setup = workerData as WorkerSetup;
const port = parentPort!;
const send = (m: ToMain) => port.postMessage(m);
const log = createLogger('processors', setup.logLevel, undefined, setup.logFormat).child({
  instance: setup.instanceId,
  thread: 'leases',
});
const board = new LeaseBoard(setup.groups, setup.board);

let nextId = 0;
const waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
type Request = Extract<ToMain, { type: 'acquire' | 'release' }>;
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
/** Asks the main thread to start or stop work, and waits for it to be done. */
function ask(m: WithoutId<Request>): Promise<void> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    send({ ...m, id } as ToMain);
  });
}

let stop: () => Promise<void> = async () => undefined;
port.on('message', (m: ToWorker) => {
  if (m.type === 'stop') {
    void stop().finally(() => port.close());
    return;
  }
  const w = waiting.get(m.id);
  waiting.delete(m.id);
  if (m.error === undefined) w?.resolve();
  else w?.reject(new Error(m.error));
});

// The main thread ticks the board while its event loop runs; silent for longer, it cannot show that
// the work it holds is alive.
const holderAlive = () => Date.now() - board.lastTick() <= setup.silentAfterMs;

try {
  const nc = await connectNats(setup.natsUrl, `processor ${setup.instanceId} leases`);
  const leases = await Promise.all(
    setup.groups.map(({ group, partitions }) =>
      PartitionLeases.open(
        nc,
        {
          instanceId: setup.instanceId,
          group,
          partitions,
          ttlMs: setup.ttlMs,
          log: log.child({ group }),
          holderAlive,
          onExpiry: (partition, expiresAt) => board.setExpiry(group, partition, expiresAt),
          onAcquire: (partition) => ask({ type: 'acquire', group, partition }),
          onRelease: (partition, reason) => ask({ type: 'release', group, partition, reason }),
          onRound: (round) => send({ type: 'round', group, round }),
        },
        setup.replicas,
      ),
    ),
  );
  stop = async () => {
    await Promise.all(leases.map((l) => l.stop()));
    await nc.drain().catch(() => nc.close());
  };
  for (const l of leases) l.start();
  send({ type: 'ready' });
} catch (err) {
  send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
  port.close();
}
