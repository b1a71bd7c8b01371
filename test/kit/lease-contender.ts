import { parentPort, workerData } from 'node:worker_threads';
import { connect } from '@nats-io/transport-node';
import { createLogger } from '../../common/logger.js';
import { PartitionLeases } from '../../processors/leases/partition-leases.js';

/**
 * Another processor instance's leases, in a worker thread of the test: it keeps claiming while the
 * test's own thread is stalled on purpose. Reports what it acquires and releases to the test.
 */
export interface ContenderSetup {
  url: string;
  instanceId: string;
  group: string;
  partitions: number;
  ttlMs: number;
}

const setup = workerData as ContenderSetup;
const port = parentPort!;
const nc = await connect({ servers: setup.url, name: `contender ${setup.instanceId}` });
const leases = await PartitionLeases.open(nc, {
  ...setup,
  log: createLogger('contender', 'silent'),
  onAcquire: (partition) => port.postMessage({ type: 'acquired', partition, at: Date.now() }),
  onRelease: (partition, reason) => port.postMessage({ type: 'released', partition, reason, at: Date.now() }),
});
port.on('message', (m: string) => {
  if (m !== 'stop') return;
  void leases
    .stop()
    .then(() => nc.close())
    .finally(() => port.close());
});
leases.start();
port.postMessage({ type: 'ready' });
