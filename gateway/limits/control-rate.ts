import type { Aedes, Client } from 'aedes';

/**
 * PINGREQ, SUBSCRIBE and UNSUBSCRIBE are outside the publish rate limit, and each costs the gateway a
 * packet to parse and answer (SUBSCRIBE also an ACL check, a subscription and a $SYS publish):
 * looped by one connection they took more than a core and slowed every other device's PUBACK
 * 10–30-fold (README, Security). A connection gets MAX_CONTROL_PACKETS_PER_SEC of them, with
 * CONTROL_PACKETS_BURST saved up for its subscriptions at connect; past that it is closed. A device
 * sends one PINGREQ a keepalive and subscribes once per connection, so none comes near.
 */
export const CONTROL_PACKETS: ReadonlySet<string> = new Set(['pingreq', 'subscribe', 'unsubscribe']);

/** One connection's bucket: `ratePerSec` tokens a second, at most `burst` saved; false when empty. */
export class ControlBucket {
  private tokens: number;
  private atMs: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.atMs = now();
  }

  take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.atMs) * this.ratePerSec) / 1000);
    this.atMs = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

type ParsingClient = Client & {
  _parser?: { on(event: 'packet', listener: (packet: { cmd: string }) => void): void };
};

/**
 * Meters each connection's control packets as its parser emits them (after aedes has queued each for
 * handling); one over the bucket closes the connection through aedes' error path, so the broker's
 * `clientError` handling (presence `lost`, its reason) applies.
 */
export function limitControlPackets(
  aedes: Aedes,
  options: { perSec: number; burst: number; exceeded: (client: Client) => Error },
): void {
  if (options.perSec <= 0) return;
  aedes.on('client', (client) => {
    const parser = (client as ParsingClient)._parser;
    if (parser === undefined) return;
    const bucket = new ControlBucket(options.perSec, options.burst);
    let over = false;
    parser.on('packet', (packet) => {
      if (over || !CONTROL_PACKETS.has(packet.cmd) || bucket.take()) return;
      over = true;
      client.emit('error', options.exceeded(client));
    });
  });
}
