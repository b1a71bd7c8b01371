import { HEARTBEAT_MISSES } from '../contract/event.js';

/**
 * The gateways alive now, from their heartbeats: the same rule as the processors' presence owner,
 * a gateway silent for HEARTBEAT_MISSES of its own intervals is gone. Always includes this one.
 */
export class GatewayDirectory {
  private readonly lastSeen = new Map<string, { atMs: number; intervalMs: number }>();

  constructor(
    readonly self: string,
    private readonly now: () => number = Date.now,
  ) {}

  seen(gateway: string, intervalMs: number): void {
    this.lastSeen.set(gateway, { atMs: this.now(), intervalMs });
  }

  live(): Set<string> {
    const now = this.now();
    const alive = new Set([this.self]);
    for (const [gateway, { atMs, intervalMs }] of this.lastSeen) {
      if (now - atMs <= HEARTBEAT_MISSES * intervalMs) alive.add(gateway);
      else this.lastSeen.delete(gateway);
    }
    return alive;
  }
}
