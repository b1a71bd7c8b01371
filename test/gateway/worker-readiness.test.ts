import { describe, expect, it } from 'vitest';
import { type WorkerView, workersNotReady } from '../../gateway/workers/worker-readiness.js';

const NOW = 100_000;
const STALE_MS = 3_000;
const worker = (view: Partial<WorkerView> & Pick<WorkerView, 'slot'>): WorkerView => ({
  gateway: `gw-w${view.slot}`,
  running: true,
  restartAtMs: undefined,
  status: { notReady: [], atMs: NOW - 100 },
  ...view,
});

describe('workersNotReady', () => {
  it('is empty only when every worker has lately said it is ready', () => {
    expect(workersNotReady([worker({ slot: 1 }), worker({ slot: 2 })], NOW, STALE_MS)).toEqual([]);
  });

  it('names each worker that is not, and why', () => {
    const missing = workersNotReady(
      [
        worker({ slot: 1, status: { notReady: ['nats', 'registry'], atMs: NOW } }),
        worker({ slot: 2, running: false, gateway: undefined, status: undefined, restartAtMs: NOW + 1_500 }),
        worker({ slot: 3, status: undefined }),
        worker({ slot: 4, status: { notReady: [], atMs: NOW - 5_000 } }),
      ],
      NOW,
      STALE_MS,
    );
    expect(missing).toEqual([
      'worker 1 (gw-w1): nats',
      'worker 1 (gw-w1): registry',
      'worker 2: not running, restarted in 2 s',
      'worker 3 (gw-w3): starting',
      'worker 4 (gw-w4): no word for 5 s',
    ]);
  });
});
