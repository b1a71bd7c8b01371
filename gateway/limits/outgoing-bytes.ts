import type { Client } from 'aedes';

/**
 * What a connection that reads slowly, or not at all, can make the gateway hold, and what it can make
 * everyone else wait for: bytes written and not yet taken by its socket, and nothing.
 *
 * aedes 1.2 hands a publish to its subscribers through mqemitter, which runs at most `concurrency`
 * (100) publishes at once and finishes one only when every subscriber's delivery has called back. A
 * delivery calls back when its write completes, and a write into a full socket completes when the
 * socket drains, or when aedes' drainTimeout closes it. So a device that subscribed and stopped
 * reading held one slot per command sent to it; with 100 held, every publish of the broker waited:
 * a command to another device was delivered after 29.6 s and its request never answered (200
 * commands of 64 KiB to the stuck one, test/security/slow-reader.test.ts).
 *
 * Here a delivery calls back once aedes has handed its bytes to the socket, never waiting for them to
 * leave. What is then buffered for a connection (its stream's `writableLength`, plus what aedes is
 * about to write) is bounded: at MAX_UNSENT_BYTES_PER_CLIENT a delivery to it is refused (`admit`,
 * from aedes' authorizeForward) and the command answered `backlogged`. What is about to be written
 * counts because aedes writes on a later turn of the event loop: commands arriving together would
 * all be admitted before the first was written. So more than the bound at once to one device is
 * partly refused even if it keeps up; its kernel buffer would have taken them. The connection stays: a
 * device on a slow link that is reading, only slower than commands come, keeps its telemetry flowing
 * and gets what fits, and whoever sent the rest is told so at once and can send it again later.
 * Closing it instead would cost a slow device a reconnect (a TLS handshake, on the same slow link)
 * and every command in flight to it. One that takes nothing at all is closed by aedes' drainTimeout
 * (DRAIN_TIMEOUT_MS) once nothing it was sent has left for that long: the bytes are bounded, then the
 * time.
 */
export interface OutgoingBytesOptions {
  /** Buffered bytes at which deliveries to a connection are refused (MAX_UNSENT_BYTES_PER_CLIENT). */
  maxBytes: number;
  /** aedes closed a connection whose socket had not drained in its drainTimeout. */
  drainTimedOut?: (client: Client) => void;
}

type Deliver = (packet: OutgoingPacket, done: () => void) => void;

interface OutgoingPacket {
  topic: string;
  payload: Buffer | string;
}

/** aedes' per-client delivery functions (lib/client.js); subscriptions capture them when made. */
type DeliveringClient = Client & {
  deliverQoS: Deliver;
  deliver0: Deliver;
  _handleDrainTimeout: () => void;
};

/** A PUBLISH's fixed header (≤ 5), topic length (2) and packet id (2) around its topic and payload. */
const PUBLISH_OVERHEAD_BYTES = 9;

function publishBytes(packet: OutgoingPacket): number {
  const payload =
    typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
  return PUBLISH_OVERHEAD_BYTES + Buffer.byteLength(packet.topic) + payload;
}

const noop = () => {};

export class OutgoingBytes {
  /** Bytes admitted that aedes has not yet written (it writes on a later turn of the event loop). */
  private readonly pending = new WeakMap<Client, number>();

  constructor(private readonly options: OutgoingBytesOptions) {}

  /**
   * Takes over a new connection's deliveries. Must run before its first subscription (aedes'
   * preConnect is the place), since a subscription keeps the delivery function it found.
   */
  watch(client: Client): void {
    const c = client as DeliveringClient;
    c.deliverQoS = this.detached(c, c.deliverQoS);
    c.deliver0 = this.detached(c, c.deliver0);
    const drainTimeout = c._handleDrainTimeout;
    const drainTimedOut = this.options.drainTimedOut;
    if (drainTimedOut !== undefined && typeof drainTimeout === 'function')
      c._handleDrainTimeout = function (this: DeliveringClient) {
        drainTimedOut(c);
        drainTimeout.call(this);
      };
  }

  /** Bytes buffered for the connection's socket, or about to be. */
  bytes(client: Client): number {
    return (
      ((client.conn as { writableLength?: number }).writableLength ?? 0) + (this.pending.get(client) ?? 0)
    );
  }

  /**
   * aedes' authorizeForward step: whether a packet may be written to the connection now. Past the
   * bound nothing more is taken; below it one more packet is, whatever its size, so that a command
   * larger than the bound still reaches a device that keeps up.
   */
  admit(client: Client, packet: OutgoingPacket): boolean {
    if (this.bytes(client) >= this.options.maxBytes) return false;
    this.pending.set(client, (this.pending.get(client) ?? 0) + publishBytes(packet));
    return true;
  }

  /**
   * aedes' delivery, calling back once the packet is written rather than once the socket drains.
   * aedes writes on setImmediate (a persistent session's after an in-memory update, a microtask
   * later), so by this setImmediate, queued after its own, the bytes admitted are in the stream's
   * writableLength and leave `pending`. A failed write still closes the connection in aedes.
   */
  private detached(client: Client, deliver: Deliver): Deliver {
    return (packet, done) => {
      const before = this.pending.get(client) ?? 0;
      deliver(packet, noop);
      const admitted = (this.pending.get(client) ?? 0) - before;
      setImmediate(() => {
        if (admitted > 0) this.pending.set(client, (this.pending.get(client) ?? 0) - admitted);
        done();
      });
    };
  }
}
