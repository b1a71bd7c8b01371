import { VerifyBusyError } from '../errors.js';

/**
 * Bounds concurrent secret verifications. scrypt runs on libuv's small thread pool (4 threads, shared
 * with file and DNS work) and takes ~16 MiB and tens of ms each: without a bound, a storm of
 * CONNECTs queues unbounded work there and every answer, good or bad, waits behind it. Past
 * `maxQueued` waiting, a verification is refused at once (the caller answers "server unavailable").
 */
export class VerifyQueue {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly maxQueued: number,
  ) {}

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency) this.running++;
    else {
      if (this.waiting.length >= this.maxQueued) throw new VerifyBusyError(this.maxQueued);
      // The slot is handed over by the finishing task, so `running` stays as it is.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
