/**
 * One clock for the whole fleet: items are filed under the tick their time falls in, and one
 * interval timer hands out every item whose tick has come. A thousand devices each with its own
 * setInterval would cost a thousand timers and drift apart; this costs one, and an item that is
 * due while the event loop was busy is handed out at the next tick, not lost.
 */
export class TimerWheel<T> {
  private readonly slots = new Map<number, T[]>();
  /** The next tick not handed out yet. */
  private cursor: number;
  private count = 0;

  constructor(
    readonly tickMs: number,
    startMs = 0,
  ) {
    this.cursor = Math.floor(startMs / tickMs);
  }

  get size(): number {
    return this.count;
  }

  /** Files `item` for time `atMs`; a time already past is handed out at the next `due`. */
  schedule(atMs: number, item: T): void {
    const slot = Math.max(this.cursor, Math.floor(atMs / this.tickMs));
    const items = this.slots.get(slot);
    if (items) items.push(item);
    else this.slots.set(slot, [item]);
    this.count++;
  }

  /** Every item filed for a time up to `nowMs`, earliest tick first. */
  due(nowMs: number): T[] {
    const until = Math.floor(nowMs / this.tickMs);
    const out: T[] = [];
    for (; this.cursor <= until; this.cursor++) {
      const items = this.slots.get(this.cursor);
      if (items === undefined) continue;
      this.slots.delete(this.cursor);
      this.count -= items.length;
      for (const item of items) out.push(item);
    }
    return out;
  }
}
