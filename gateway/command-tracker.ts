/**
 * What became of one command on this gateway while aedes publishes it: how many connections it was
 * handed to (aedes' authorizeForward), how many refused it for their backlog (outgoing bytes, or a
 * persistent session's unacknowledged commands), how many away sessions queued it or were full (the
 * session store). aedes copies a packet many times on the way but keeps its payload Buffer, so the Buffer
 * the gateway published identifies the command in every hook.
 */
export interface CommandTally {
  delivered: number;
  queued: number;
  queueFull: number;
  backlogged: number;
}

export class CommandTracker {
  private readonly open = new WeakMap<object, CommandTally>();

  /** Starts counting for a payload about to be published; `untrack` once aedes has called back. */
  track(payload: Buffer): CommandTally {
    const tally = { delivered: 0, queued: 0, queueFull: 0, backlogged: 0 };
    this.open.set(payload, tally);
    return tally;
  }

  untrack(payload: Buffer): void {
    this.open.delete(payload);
  }

  forwarded(packet: { payload: unknown }): void {
    this.count(packet, 'delivered');
  }

  queued(packet: { payload: unknown }): void {
    this.count(packet, 'queued');
  }

  queueFull(packet: { payload: unknown }): void {
    this.count(packet, 'queueFull');
  }

  backlogged(packet: { payload: unknown }): void {
    this.count(packet, 'backlogged');
  }

  /** Anything not being tracked (a queued command replayed on a reconnect) is not counted. */
  private count(packet: { payload: unknown }, key: keyof CommandTally): void {
    const payload = packet.payload;
    const tally = typeof payload === 'object' && payload !== null ? this.open.get(payload) : undefined;
    if (tally !== undefined) tally[key]++;
  }
}
