import { createInbox, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import { backoffMs } from '../common/backoff.js';
import type { Logger } from '../common/logger.js';
import { NotStoredError } from './errors.js';

/**
 * Publishes to JetStream with many publishes in flight on one connection, and says for each one
 * whether it was stored.
 *
 * `js.publish()` costs a promise, a timer and a mux-inbox entry per message (16–18k msg/s here).
 * This publisher sends core PUBs with reply subjects `{inbox}.{token}` and collects every PubAck on
 * one wildcard subscription; timeouts are swept by a single timer over an insertion-ordered map.
 * Order: one connection, one subject per device, so a device's events are stored in the order they
 * were handed in, except when a publish has to be retried after a failure.
 *
 * A publish is retried (backoff, no limit) for as long as `wanted()` says someone still waits for
 * it; once it returns false (the MQTT client went away without its PUBACK) the publish is given up:
 * the device still holds the message and will retransmit it. While the connection is down nothing
 * is sent: publishes are parked and go out on reconnect.
 *
 * A stream stores one connection's publishes in order, so a PubAck overtaking older unanswered
 * publishes under the same subject prefix means those were lost (a stream leader died with them):
 * they are sent again at once rather than after their ack timeout, which after a leader election
 * would store them an ack timeout behind newer events of their device (late for the processors).
 */
export type PublishDone = (err: NotStoredError | undefined, duplicate: boolean) => void;

export type RetryCause = 'timeout' | 'no_responders' | 'jetstream_error' | 'no_room';

export interface PublisherObserver {
  stored?(latencySeconds: number, duplicate: boolean): void;
  retried?(why: RetryCause): void;
  failed?(why: string): void;
}

/** A stream JetStream refuses to store in for lack of room, and the server's words for it. */
export interface Refusal {
  stream: string;
  reason: string;
}

export interface PublisherOptions {
  ackTimeoutMs: number;
  log: Logger;
  observer?: PublisherObserver;
  maxRetryDelayMs?: number;
}

/**
 * The one header this publisher sends, encoded once. nats.js only calls `encode()` on the headers it
 * is given; its general MsgHdrs (a Map, per-key validation, toString, TextEncoder) cost ~3% of the
 * gateway's CPU per message. Message ids are built from validated ids and digits, never CR or LF.
 */
class MsgIdHeader {
  private readonly bytes: Buffer;
  constructor(msgId: string) {
    this.bytes = Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n\r\n`);
  }
  encode(): Uint8Array {
    return this.bytes;
  }
}

interface Pending {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  wanted: () => boolean;
  done: PublishDone;
  firstSentAt: number;
  attempts: number;
  deadline: number;
}

interface PubAck {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; err_code?: number; description?: string };
}

const MIN_RETRY_DELAY_MS = 50;
const DEFAULT_MAX_RETRY_DELAY_MS = 2_000;
const STATUS_NO_RESPONDERS = 503;

/**
 * JetStream's answers when it has no room for a message (seen from nats-server 2.9.10): the store
 * (max_file_store) full, `{"code":503,"err_code":10023,"description":"insufficient resources"}`; a
 * stream that discards new messages at its limits, or a failed write, 10077 with the store's error
 * ("maximum bytes exceeded", "maximum messages exceeded"); the account's max_file reached,
 * `{"code":400,"err_code":10002,"description":"resource limits exceeded for account"}`. None heals by
 * itself in seconds, but each does once room is made: the publish is held and retried like an outage,
 * the device unacknowledged, and the stream reported (refusals(), /readyz) meanwhile.
 */
const NO_ROOM_ERR_CODES: ReadonlySet<number> = new Set([10023, 10077, 10002]);
/**
 * A refusal marks its stream this long, unless a message is stored in it first. Held publishes retry
 * at least every maxRetryDelayMs, so the mark stays while any device waits; with none waiting (a load
 * balancer took the gateway out on /readyz) it lapses, and devices let back in find out afresh.
 */
const MIN_REFUSAL_MEMORY_MS = 10_000;
/** Ack timeouts, and no answer of any kind, for this many ack timeouts: JetStream does not answer. */
const UNANSWERED_ACK_TIMEOUTS = 3;
/** `{"stream":"` */
const PUBACK_STREAM_AT = 11;

export class JetStreamPublisher {
  private readonly inbox: string;
  private readonly pending = new Map<number, Pending>();
  private readonly waitingRetry = new Set<Pending>();
  private parked: Pending[] = [];
  /** Sends collected during this event-loop turn, written in one go (see flushOutbox). */
  private outbox: { token: number; p: Pending }[] = [];
  private flushScheduled = false;
  private nextToken = 1;
  private connected = true;
  private closed = false;
  private readonly sweeper: NodeJS.Timeout;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly maxRetryDelayMs: number;
  private readonly refusalMemoryMs: number;
  /** Streams that refused a publish for lack of room, with when they last did. */
  private readonly refused = new Map<string, Refusal & { at: number }>();
  private lastReplyAt = Date.now();
  private lastTimeoutAt = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: PublisherOptions,
  ) {
    this.inbox = `${createInbox()}.`;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS;
    this.refusalMemoryMs = Math.max(MIN_REFUSAL_MEMORY_MS, 5 * this.maxRetryDelayMs);
    nc.subscribe(`${this.inbox}*`, { callback: (err, msg) => (err ? undefined : this.onReply(msg)) });
    this.sweeper = setInterval(() => this.sweep(), Math.min(250, Math.max(10, options.ackTimeoutMs / 4)));
    this.sweeper.unref();
    void this.watchConnection();
  }

  /** Publishes not yet known stored or given up (sent, parked, or waiting to retry). */
  get inFlight(): number {
    return this.pending.size + this.parked.length + this.waitingRetry.size;
  }

  get isConnected(): boolean {
    return this.connected && !this.closed;
  }

  /** Streams refusing writes for lack of room: refused recently, and nothing stored in them since. */
  refusals(now = Date.now()): Refusal[] {
    const out: Refusal[] = [];
    for (const [stream, r] of this.refused) {
      if (now - r.at < this.refusalMemoryMs) out.push({ stream, reason: r.reason });
      else this.refused.delete(stream);
    }
    return out;
  }

  /**
   * How long JetStream has answered nothing while publishes timed out (a server whose store hangs on
   * a full disk does that), once that is UNANSWERED_ACK_TIMEOUTS ack timeouts or more; else undefined.
   */
  unansweredForMs(now = Date.now()): number | undefined {
    if (!this.isConnected || this.lastTimeoutAt <= this.lastReplyAt) return undefined;
    if (now - this.lastTimeoutAt >= this.refusalMemoryMs) return undefined;
    const silent = now - this.lastReplyAt;
    return silent >= UNANSWERED_ACK_TIMEOUTS * this.options.ackTimeoutMs ? silent : undefined;
  }

  publish(
    subject: string,
    data: Uint8Array,
    msgId: string | undefined,
    wanted: () => boolean,
    done: PublishDone,
  ) {
    if (this.closed) {
      done(new NotStoredError('publisher is closed', subject), false);
      return;
    }
    const headers = msgId === undefined ? undefined : (new MsgIdHeader(msgId) as unknown as MsgHdrs);
    const now = Date.now();
    this.send({ subject, data, headers, wanted, done, firstSentAt: now, attempts: 0, deadline: 0 }, now);
  }

  /** Resolves when nothing is in flight, or after timeoutMs; returns how many were still in flight. */
  async settle(timeoutMs: number): Promise<number> {
    if (this.inFlight === 0) return 0;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.inFlight;
  }

  /** Fails everything still in flight; the devices keep those messages, unacknowledged. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    const all = [...this.pending.values(), ...this.parked, ...this.waitingRetry];
    this.pending.clear();
    this.parked = [];
    this.waitingRetry.clear();
    for (const p of all)
      this.complete(p, new NotStoredError('publisher closed before the ack', p.subject), false);
    this.notifyIdle();
  }

  private send(p: Pending, now: number): void {
    if (!this.connected) {
      this.parked.push(p);
      return;
    }
    const token = this.nextToken++;
    p.deadline = now + this.options.ackTimeoutMs;
    this.pending.set(token, p);
    this.outbox.push({ token, p });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushOutbox);
    }
  }

  /**
   * nats.js writes to the socket on a microtask after each synchronous run of publishes, and aedes
   * handles each socket read in its own task: without this, one TCP write per MQTT read. Collecting
   * the turn's publishes and handing them over together makes it one write per event-loop turn.
   */
  private readonly flushOutbox = (): void => {
    this.flushScheduled = false;
    const batch = this.outbox;
    this.outbox = [];
    for (const { token, p } of batch) {
      if (this.pending.get(token) !== p) continue; // failed or closed meanwhile
      try {
        this.nc.publish(p.subject, p.data, { reply: this.inbox + token, headers: p.headers });
      } catch (err) {
        // Synchronous refusals (payload over the server's max_payload, connection closed) do not heal.
        this.pending.delete(token);
        this.fail(p, `publish refused: ${(err as Error).message}`, err);
      }
    }
  };

  private onReply(msg: Msg): void {
    this.lastReplyAt = Date.now();
    const token = Number(msg.subject.slice(this.inbox.length));
    const p = this.pending.get(token);
    if (p === undefined) return; // answer to a publish already timed out and resent
    this.pending.delete(token);
    if (msg.headers?.code === STATUS_NO_RESPONDERS) {
      this.retry(p, 'no_responders');
      return;
    }
    // A PubAck is `{"stream":"…", "seq":n}`, with `,"duplicate": true` appended for a repeat (the
    // field is absent otherwise); only an error reply needs a full parse.
    const text = msg.string();
    if (text.startsWith('{"stream"') && !text.includes('"error"')) {
      if (this.refused.size > 0)
        this.roomAgain(text.slice(PUBACK_STREAM_AT, text.indexOf('"', PUBACK_STREAM_AT)));
      const duplicate = text.includes('"duplicate"');
      if (!duplicate) this.resendOvertaken(token, p.subject);
      this.options.observer?.stored?.((Date.now() - p.firstSentAt) / 1000, duplicate);
      this.complete(p, undefined, duplicate);
      this.notifyIdle();
      return;
    }
    let ack: PubAck;
    try {
      ack = JSON.parse(text) as PubAck;
    } catch {
      this.retry(p, 'jetstream_error');
      return;
    }
    if (ack.error !== undefined) {
      if (ack.error.err_code !== undefined && NO_ROOM_ERR_CODES.has(ack.error.err_code)) {
        this.noRoom(ack.stream || p.subject, ack.error.description ?? `error ${ack.error.err_code}`);
        this.retry(p, 'no_room');
      }
      // 503: JetStream temporarily unavailable (leader election, cluster catching up): transient.
      else if (ack.error.code === STATUS_NO_RESPONDERS || ack.error.code === undefined)
        this.retry(p, 'jetstream_error');
      else this.fail(p, `JetStream refused the message: ${ack.error.description ?? ack.error.code}`);
      return;
    }
    if (this.refused.size > 0 && ack.stream !== undefined) this.roomAgain(ack.stream);
    if (ack.duplicate !== true) this.resendOvertaken(token, p.subject);
    this.options.observer?.stored?.((Date.now() - p.firstSentAt) / 1000, ack.duplicate === true);
    this.complete(p, undefined, ack.duplicate === true);
    this.notifyIdle();
  }

  /**
   * Older publishes under the subject's first token (one stream) still unanswered when `token` was
   * stored: resent now, counted as the timeouts they are. A duplicate's ack is no evidence (a
   * clustered stream answers it before earlier publishes have committed). Only publishes with a
   * message id, which JetStream deduplicates should one have been stored after all. Cheap in the
   * usual case: the oldest pending publish is newer than `token`.
   */
  private resendOvertaken(token: number, subject: string): void {
    const prefix = subject.slice(0, subject.indexOf('.') + 1);
    for (const [older, q] of this.pending) {
      if (older > token) break; // tokens are inserted in send order
      if (q.headers === undefined || !q.subject.startsWith(prefix)) continue;
      this.pending.delete(older);
      this.retry(q, 'timeout');
    }
  }

  private noRoom(stream: string, reason: string): void {
    if (!this.refused.has(stream))
      this.options.log.error(
        { stream, reason },
        'JetStream refuses writes for lack of room: holding publishes, acknowledging nothing',
      );
    this.refused.set(stream, { stream, reason, at: Date.now() });
  }

  private roomAgain(stream: string): void {
    if (this.refused.delete(stream)) this.options.log.info({ stream }, 'JetStream stores again');
  }

  private sweep(): void {
    const now = Date.now();
    // While disconnected, publishes whose client left are let go now rather than at reconnect,
    // so an outage with reconnecting devices does not pile up copies of the same messages.
    if (!this.connected && this.parked.length > 0) {
      const parked = this.parked;
      this.parked = [];
      for (const p of parked) {
        if (p.wanted()) this.parked.push(p);
        else this.fail(p, 'abandoned: the client went away before it was stored');
      }
    }
    for (const [token, p] of this.pending) {
      if (p.deadline > now) break; // tokens are inserted in deadline order
      this.pending.delete(token);
      this.lastTimeoutAt = now;
      this.retry(p, 'timeout');
    }
  }

  private retry(p: Pending, why: RetryCause): void {
    if (this.closed || !p.wanted()) {
      this.fail(p, this.closed ? 'publisher closed' : 'abandoned: the client went away before it was stored');
      return;
    }
    this.options.observer?.retried?.(why);
    p.attempts++;
    // Timeouts already waited ackTimeoutMs; resend at once unless the connection is down.
    const delay =
      why === 'timeout' ? 0 : backoffMs(p.attempts, MIN_RETRY_DELAY_MS, this.maxRetryDelayMs, true);
    this.waitingRetry.add(p);
    setTimeout(() => {
      if (!this.waitingRetry.delete(p)) return; // closed meanwhile
      this.send(p, Date.now());
    }, delay).unref();
  }

  private fail(p: Pending, why: string, cause?: unknown): void {
    this.options.observer?.failed?.(why);
    this.complete(p, new NotStoredError(why, p.subject, cause === undefined ? undefined : { cause }), false);
    this.notifyIdle();
  }

  /**
   * Runs a publish's callback in isolation. These run inside the PubAck subscription and the timers;
   * a callback that threw there would stop the subscription (every later ack lost) or the process.
   */
  private complete(p: Pending, err: NotStoredError | undefined, duplicate: boolean): void {
    try {
      p.done(err, duplicate);
    } catch (thrown) {
      this.options.log.error({ err: thrown, subject: p.subject }, 'publish callback threw (a bug): isolated');
    }
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || this.inFlight > 0) return;
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private async watchConnection(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === 'disconnect') {
        this.connected = false;
        this.options.log.warn(
          { nats: status },
          'NATS connection lost: holding publishes, acknowledging nothing',
        );
      } else if (status.type === 'reconnect') {
        this.connected = true;
        this.lastReplyAt = Date.now(); // silence while disconnected is not JetStream's
        const parked = this.parked;
        this.parked = [];
        this.options.log.info({ resent: parked.length }, 'NATS connection back: resending held publishes');
        const now = Date.now();
        for (const p of parked) {
          if (p.wanted()) this.send(p, now);
          else this.fail(p, 'abandoned: the client went away before it was stored');
        }
      }
    }
  }
}
