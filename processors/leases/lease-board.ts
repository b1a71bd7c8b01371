/**
 * What the main thread and the lease worker (lease-worker.ts) know of each other, in shared memory
 * so that neither needs the other's event loop to read it: a message would wait for the very loop
 * that is busy. Slot 0 is the main thread's last liveness tick; then, group after group, the expiry
 * of each lease the worker holds (0 when not held), both in wall-clock ms. BigInt64 because only
 * integer arrays take Atomics: a plain Float64Array slot could be read half-written.
 */
export interface BoardGroup {
  group: string;
  partitions: number;
}

export class LeaseBoard {
  private readonly view: BigInt64Array;
  private readonly offsets = new Map<string, number>();

  constructor(
    readonly groups: readonly BoardGroup[],
    readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(
      8 * (1 + groups.reduce((n, g) => n + g.partitions, 0)),
    ),
  ) {
    this.view = new BigInt64Array(buffer);
    let offset = 1;
    for (const g of groups) {
      this.offsets.set(g.group, offset);
      offset += g.partitions;
    }
  }

  /** Main thread: "my event loop ran at `now`". */
  tick(now: number): void {
    Atomics.store(this.view, 0, BigInt(Math.floor(now)));
  }

  lastTick(): number {
    return Number(Atomics.load(this.view, 0));
  }

  /** Worker: the lease on `partition` now runs until `expiresAt` (0: not held). */
  setExpiry(group: string, partition: number, expiresAt: number): void {
    Atomics.store(this.view, this.slot(group, partition), BigInt(Math.floor(expiresAt)));
  }

  expiry(group: string, partition: number): number {
    return Number(Atomics.load(this.view, this.slot(group, partition)));
  }

  /** Forgets every lease (the worker is gone: it renews nothing any more). */
  clearLeases(): void {
    for (const g of this.groups) for (let p = 0; p < g.partitions; p++) this.setExpiry(g.group, p, 0);
  }

  private slot(group: string, partition: number): number {
    const offset = this.offsets.get(group);
    const size = this.groups.find((g) => g.group === group)?.partitions ?? 0;
    if (offset === undefined || partition < 0 || partition >= size) {
      throw new RangeError(`no lease slot for ${group} ${partition}`);
    }
    return offset + partition;
  }
}
