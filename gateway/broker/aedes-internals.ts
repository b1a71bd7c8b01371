import type { Aedes, Client, PublishPacket } from 'aedes';
import mqttPacket from 'mqtt-packet';

/**
 * Every reach into aedes 1.2 / mqtt-packet 9 internals the broker makes, in one place. Both are pinned
 * to exact versions in package.json, and test/gateway/broker/aedes-pin.test.ts fails when a member
 * used here changes: re-check each function of this file against the new version before bumping.
 */

/** The part of mqtt-packet's Parser the frame-size guard wraps. */
interface ParserInternals {
  _parseLength: () => boolean;
  /** The packet being parsed: its type and remaining length are known once its header is. */
  packet: { cmd: string; length: number };
  _emitError: (e: Error) => boolean;
}

export type AedesClientInternals = Client & {
  _parser?: ParserInternals;
  /** Set by aedes when the client sent DISCONNECT. */
  _disconnected?: boolean;
  /** Stop and restart reading the connection (aedes uses them around authentication). */
  pause: () => void;
  resume: () => void;
  _paused: boolean;
  /** Packets of the current read being handled; the next read waits until none are. */
  _parsingBatch: number;
  /** Called as each packet's handling completes (and by resume). */
  _nextBatch: (err?: Error | null) => void;
};

/** What the in-flight bound needs of a client: aedes' pause/resume, and whether it is closed. */
export interface PausableClient {
  readonly closed: boolean;
  pause(): void;
  resume(): void;
}

/** The client as one that can be paused (aedes' own pause/resume, made safe by countCompletionsWhilePaused). */
export function pausable(client: Client): PausableClient {
  return client as AedesClientInternals;
}

/** True when the client ended its connection with a DISCONNECT packet (a clean disconnect). */
export function sentDisconnect(client: Client): boolean {
  return (client as AedesClientInternals)._disconnected === true;
}

/**
 * Makes aedes 1.2's pause() safe in the middle of a read. Its `nextBatch` returns early while paused,
 * dropping the completion of each packet of the current read that finishes meanwhile; after resume()
 * it then waits for completions that already happened, and never reads the connection again (until
 * the keepalive runs out). This counts those completions without reading. Installed before the first
 * packet, since aedes passes `client._nextBatch` to each packet's handler as it arrives.
 */
export function countCompletionsWhilePaused(client: Client): void {
  const c = client as AedesClientInternals;
  const next = c._nextBatch;
  c._nextBatch = (err) => {
    if (!err && c._paused) {
      c._parsingBatch = Math.max(0, c._parsingBatch - 1);
      return;
    }
    next(err);
  };
}

export interface FrameLimits {
  /** MAX_CONNECT_BYTES: a CONNECT's remaining length. */
  maxConnectBytes: number;
  /** MAX_PACKET_BYTES: any other packet's remaining length. */
  maxPacketBytes: number;
  /** A frame was refused; `setting` names the bound it passed. */
  exceeded: (setting: 'MAX_CONNECT_BYTES' | 'MAX_PACKET_BYTES') => void;
}

/**
 * Refuses MQTT frames above `maxPacketBytes`, and a CONNECT above `maxConnectBytes`, as soon as their
 * header arrives, before buffering them: mqtt-packet has no size limit and would buffer up to 256 MB
 * per frame. A CONNECT (client id, credentials, will) is read before anyone is authenticated: its
 * bound is what an unknown peer can make the gateway hold. The error goes out through the parser's
 * own error path, which aedes turns into a `clientError` and a closed connection.
 */
export function limitFrameSizes(client: Client, limits: FrameLimits): void {
  const parser = (client as AedesClientInternals)._parser;
  if (parser === undefined) return;
  const parseLength = parser._parseLength;
  parser._parseLength = function (this: ParserInternals) {
    const ok = parseLength.call(this);
    if (!ok) return ok;
    const isConnect = this.packet.cmd === 'connect';
    const limit = isConnect ? limits.maxConnectBytes : limits.maxPacketBytes;
    if (this.packet.length > limit) {
      const setting = isConnect ? 'MAX_CONNECT_BYTES' : 'MAX_PACKET_BYTES';
      limits.exceeded(setting);
      return this._emitError(
        new Error(`${this.packet.cmd} of ${this.packet.length} bytes exceeds ${setting} (${limit})`),
      );
    }
    return ok;
  };
}

type WriteToStream = typeof mqttPacket.writeToStream;

let oneWriteAcks = false;

/** An MQTT 3.1.1 PUBACK for packet id `id` (0–65535), as mqtt-packet encodes it. */
export function pubackBytes(id: number): Buffer {
  const bytes = Buffer.allocUnsafe(4);
  bytes[0] = 0x40; // PUBACK
  bytes[1] = 2; // remaining length: the packet id
  bytes[2] = id >>> 8;
  bytes[3] = id & 0xff;
  return bytes;
}

/**
 * Makes each MQTT 3.1.1 PUBACK one 4-byte socket write. aedes writes every packet through
 * mqtt-packet's `writeToStream`, which corks the stream, writes a PUBACK as three buffers and uncorks
 * on the next tick: a `writev` per acknowledgement, with cork bookkeeping and a `nextTick` around it.
 * At a fleet's shape (thousands of connections, one message per socket read) nothing shares that
 * write, and it was an eighth of the gateway's CPU (bench:pipeline --profile, 2026-12-06). The bytes
 * are the same (test/gateway/broker/aedes-pin.test.ts compares them with mqtt-packet's); every other
 * packet, and a PUBACK with options (MQTT 5), is mqtt-packet's. Process-wide, installed once.
 */
export function writeAcksInOneWrite(): void {
  if (oneWriteAcks) return;
  oneWriteAcks = true;
  const packets = mqttPacket as { writeToStream: WriteToStream };
  const general = packets.writeToStream;
  const patched = ((packet, stream, opts) => {
    if (packet.cmd === 'puback' && opts === undefined) {
      const id = packet.messageId;
      if (typeof id === 'number' && id >= 0 && id <= 0xffff) return stream.write(pubackBytes(id));
    }
    return general(packet, stream, opts);
  }) as WriteToStream;
  patched.cacheNumbers = general.cacheNumbers;
  packets.writeToStream = patched;
}

/** Marks a publish the ingest has taken (stored in JetStream): aedes has nothing to route it to. */
const INGESTED = Symbol('ingested by the gateway');

/** Says that `packet`, a device's publish on its own topics, was taken by the ingest (skipIngested). */
export function markIngested(packet: PublishPacket): void {
  (packet as PublishPacket & { [INGESTED]?: true })[INGESTED] = true;
}

/**
 * After acknowledging a device's PUBLISH, aedes hands it to `broker.publish` for its subscribers:
 * a Packet copy, a retained-store step, a persistence lookup of offline subscriptions and an
 * mqemitter match, a promise or two each, per message. The ingest's topics (`devices/{id}/telemetry`,
 * `…/status`, and what it dead-letters) have no MQTT subscribers: the ACL grants devices command
 * and Sparkplug filters only (authorize-subscribe.ts), none of which matches them. A publish marked
 * by markIngested therefore completes here at once; any other (commands, Sparkplug, wills, the
 * gateway's own) takes aedes' path. At a fleet's shape that path was ~4 % of the gateway's CPU.
 */
export function skipIngested(aedes: Aedes): void {
  const general = aedes.publish.bind(aedes);
  aedes.publish = ((packet: PublishPacket, client: unknown, done?: (err?: Error | null) => void) => {
    if ((packet as PublishPacket & { [INGESTED]?: true })[INGESTED] === true) {
      (typeof client === 'function' ? client : done)?.(null);
      return;
    }
    (general as (p: PublishPacket, c: unknown, d?: unknown) => void)(packet, client, done);
  }) as Aedes['publish'];
}
