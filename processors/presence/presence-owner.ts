import {
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { z } from 'zod';
import { backoffMs } from '../../common/backoff.js';
import type { Logger } from '../../common/logger.js';
import { Naps } from '../../common/naps.js';
import { GatewayHeartbeat, PresenceEvent, PresenceState } from '../../contract/event.js';
import { isDeviceId, isGatewayId, isTenant } from '../../contract/ids.js';
import {
  GATEWAY_HEARTBEAT_SUBJECTS,
  PRESENCE_STATE_BUCKET,
  PRESENCE_STREAM,
  presenceStateKey,
} from '../../contract/subjects.js';
import { isPermanentPublishError } from '../errors.js';
import type { LimitReached } from '../metrics.js';
import { DEFAULT_ROLE_STALL_TIMEOUT_MS } from '../roles.js';
import {
  type DeviceStatusRow,
  type PresenceChanges,
  type PresenceLimits,
  PresenceTracker,
} from './presence-tracker.js';

/**
 * The presence owner: one per deployment (the processors hand the role out by lease). It reads
 * PRESENCE in order with an ordered consumer, keeps every device's PresenceState in KV `presence`,
 * hands each flip of `online` to `write`, and takes the connections of a gateway whose heartbeats
 * stopped as lost.
 *
 * Order of durability, per batch: rows first, then states, then the checkpoint. A crash between any
 * two replays the batch: rows are rewritten with the same tags and time (the TSDB keeps one point),
 * and events a device's state already holds (its `seq`) are skipped, so nothing flips twice. States
 * written before their rows would lose those rows on a crash: the replay would find nothing to do.
 */
export interface PresenceOwnerOptions {
  nc: NatsConnection;
  /** Bucket PROCESSOR_CHECKPOINTS_BUCKET, created by the caller; the owner uses key `presence`. */
  checkpoints: KV;
  /** Replicas of the `presence` bucket when the owner creates it. */
  replicas: number;
  /** Interval assumed for a gateway not heard from yet (after a restart, every gateway). */
  defaultHeartbeatIntervalMs: number;
  /** How often gateways' heartbeat timeouts are checked. */
  tickIntervalMs: number;
  /**
   * Resolves once the rows are durable in the TSDB. A rejection is retried, with backoff, for as
   * long as the owner runs (presence stops moving meanwhile): resolve, and log, a refusal that
   * retrying cannot fix.
   */
  write: (rows: DeviceStatusRow[]) => Promise<void>;
  log: Logger;
  clock?: () => number;
  /** What a device's state may hold (PRESENCE_MAX_*); the defaults when left out. */
  limits?: Partial<PresenceLimits>;
  onLimit?: LimitReached;
  /** A state NATS refused for good (skipped: the device keeps its previous state in KV). */
  onRefused?: (states: number) => void;
  /** How long the same work may be stuck before stalled() says so (ROLE_STALL_TIMEOUT). */
  stallTimeoutMs?: number;
}

export const PRESENCE_CHECKPOINT_KEY = 'presence';
/** How often the checkpoint is saved, at most; a checkpoint not saved only means a longer replay. */
export const PRESENCE_CHECKPOINT_INTERVAL_MS = 1_000;

const Checkpoint = z.object({
  /** Last PRESENCE sequence whose rows and states are durable. */
  seq: z.int().nonnegative(),
  /** When PRESENCE was created: a recreated stream starts its sequences again from 1. */
  streamCreated: z.string().optional(),
});
type Checkpoint = z.infer<typeof Checkpoint>;

const FETCH_BATCH = 1_000;
/** KV puts in flight at once: enough to hide the round trip, few enough not to flood the server. */
const PUT_CONCURRENCY = 256;
const MIN_RETRY_DELAY_MS = 100;
const MAX_RETRY_DELAY_MS = 5_000;
const STREAM_POLL_MS = 1_000;

export class PresenceOwner {
  private readonly clock: () => number;
  private readonly js: JetStreamClient;
  private sub: Subscription | undefined;
  private connectionStatus: AsyncIterable<unknown> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private messages: ConsumerMessages | undefined;
  private running: Promise<void> = Promise.resolve();
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private readonly naps = new Naps();
  /** Heartbeats cannot reach a disconnected owner: no gateway is judged meanwhile. */
  private connected = true;
  private lastTickAt: number;

  private pending = emptyBatch();
  private flushed: Promise<void> = Promise.resolve();
  private nextFlush: Promise<void> | undefined;
  /** A batch was given up (only when stopping): nothing after it may be checkpointed. */
  private broken = false;
  /** Last sequence applied to the tracker. */
  private appliedSeq: number;
  /** Last sequence whose rows and states are durable. */
  private durableSeq: number;
  private savedSeq: number;
  private checkpointDirty = false;
  private lastCheckpointAt = Number.NEGATIVE_INFINITY;
  private streamCreated: string | undefined;
  /** Since when a batch has been on its way to durability, and what it waits for now. */
  private persistingSince: number | undefined;
  private waitingFor = 'status rows not written';
  /** Since when the consumer has been failing without a message in between. */
  private failingSince: number | undefined;

  private constructor(
    private readonly o: PresenceOwnerOptions,
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
    private readonly tracker: PresenceTracker,
    private readonly checkpoint: Checkpoint | undefined,
  ) {
    this.clock = o.clock ?? Date.now;
    this.js = jetstream(o.nc);
    this.appliedSeq = this.durableSeq = this.savedSeq = checkpoint?.seq ?? 0;
    this.lastTickAt = this.clock();
  }

  static async start(o: PresenceOwnerOptions): Promise<PresenceOwner> {
    const clock = o.clock ?? Date.now;
    const kv = await new Kvm(o.nc).create(PRESENCE_STATE_BUCKET, { history: 1, replicas: o.replicas });
    const jsm = await jetstreamManager(o.nc);
    const checkpoint = await readCheckpoint(o.checkpoints, o.log);
    const states = await loadStates(kv, o.log);
    const tracker = new PresenceTracker({
      defaultHeartbeatIntervalMs: o.defaultHeartbeatIntervalMs,
      nowMs: clock(),
      ...(o.limits ? { limits: o.limits } : {}),
      ...(o.onLimit ? { onLimit: o.onLimit } : {}),
    });
    tracker.restore(states);
    const owner = new PresenceOwner(o, kv, jsm, tracker, checkpoint);
    owner.listen();
    owner.running = owner.run().catch((err: unknown) => o.log.error({ err }, 'presence consumer stopped'));
    o.log.info({ devices: states.length, from: (checkpoint?.seq ?? 0) + 1 }, 'presence owner started');
    return owner;
  }

  /** Last PRESENCE sequence saved in the checkpoint. */
  get checkpointSeq(): number {
    return this.savedSeq;
  }

  /**
   * Why presence cannot make progress, once a batch has waited longer than the stall timeout to
   * become durable (the TSDB or KV does not take it) or the consumer has kept failing that long.
   */
  stalled(): string | undefined {
    const now = this.clock();
    const timeout = this.o.stallTimeoutMs ?? DEFAULT_ROLE_STALL_TIMEOUT_MS;
    if (this.persistingSince !== undefined && now - this.persistingSince >= timeout)
      return `${this.waitingFor} for ${Math.round((now - this.persistingSince) / 1_000)} s`;
    if (this.failingSince !== undefined && now - this.failingSince >= timeout)
      return `PRESENCE not consumed for ${Math.round((now - this.failingSince) / 1_000)} s`;
    return undefined;
  }

  /** Stops consuming, waits for what is in flight to be durable, saves the checkpoint, unsubscribes. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      clearInterval(this.timer);
      this.naps.wakeAll();
      await this.messages?.close().catch(() => undefined);
      await this.running;
      await this.flush();
      await this.saveCheckpoint(true);
      this.sub?.unsubscribe();
      (this.connectionStatus as { stop?: () => void } | undefined)?.stop?.();
      this.o.log.info({ seq: this.savedSeq }, 'presence owner stopped');
    })();
    return this.stopped;
  }

  private listen(): void {
    this.sub = this.o.nc.subscribe(GATEWAY_HEARTBEAT_SUBJECTS, {
      callback: (err, msg) => {
        if (err) return;
        const hb = parseJson(GatewayHeartbeat, () => msg.json());
        if (hb === undefined || !isGatewayId(hb.gateway)) {
          this.o.log.warn({ subject: msg.subject }, 'heartbeat does not match the contract: ignored');
          return;
        }
        this.tracker.heartbeat(hb, this.clock());
      },
    });
    const status = this.o.nc.status();
    this.connectionStatus = status;
    void (async () => {
      for await (const s of status) {
        if (s.type === 'disconnect') this.connected = false;
        else if (s.type === 'reconnect') {
          this.connected = true;
          this.tracker.restartClocks(this.clock());
        }
      }
    })();
    this.timer = setInterval(() => this.tick(), this.o.tickIntervalMs);
  }

  private tick(): void {
    if (!this.connected) return;
    try {
      this.judgeGateways();
    } catch (err) {
      // A timer callback that throws would end the process; a missed tick only delays a timeout.
      this.o.log.error({ err }, 'presence tick failed');
    }
    // Also lets a checkpoint held back by the rate limit through when no events arrive.
    void this.flush();
  }

  private judgeGateways(): void {
    const now = this.clock();
    // A tick this late means the process stalled: heartbeats may wait unread behind this timer.
    if (now - this.lastTickAt > this.o.tickIntervalMs + this.o.defaultHeartbeatIntervalMs)
      this.tracker.restartClocks(now);
    this.lastTickAt = now;
    const changes = this.tracker.tick(now);
    if (changes.lostGateways.length > 0)
      this.o.log.warn(
        { gateways: changes.lostGateways, offline: changes.rows.length },
        'gateway heartbeats stopped: their connections taken as lost',
      );
    this.collect(changes);
  }

  private async run(): Promise<void> {
    if (!(await this.waitForStream())) return;
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const consumer = await this.js.consumers.get(PRESENCE_STREAM, { opt_start_seq: this.appliedSeq + 1 });
        const messages = await consumer.consume({ max_messages: FETCH_BATCH });
        this.messages = messages;
        this.failingSince = undefined;
        if (this.stopping) {
          await messages.close();
          return;
        }
        await this.consume(messages);
        if (this.stopping) return;
        this.o.log.error({ seq: this.appliedSeq }, 'presence consumer ended unexpectedly; restarting');
      } catch (err) {
        if (this.stopping) return;
        this.o.log.error({ err, seq: this.appliedSeq }, 'presence consumer failed; restarting');
      }
      this.failingSince ??= this.clock();
      await this.sleep(backoff(attempt));
    }
  }

  /** Waits for the gateway to create PRESENCE; detects a stream recreated since the checkpoint. */
  private async waitForStream(): Promise<boolean> {
    let logged = false;
    while (!this.stopping) {
      const info = await this.jsm.streams.info(PRESENCE_STREAM).catch(() => undefined);
      if (info !== undefined) {
        this.streamCreated = info.created;
        const cp = this.checkpoint;
        if (
          cp !== undefined &&
          ((cp.streamCreated !== undefined && cp.streamCreated !== info.created) ||
            cp.seq > info.state.last_seq)
        ) {
          this.o.log.warn(
            { checkpoint: cp.seq, lastSeq: info.state.last_seq },
            'PRESENCE was recreated since the checkpoint: replaying it from the start',
          );
          // The states' sequences belong to the old stream and would hide the new one's events.
          this.collect(this.tracker.forgetSequences());
          await this.flush();
          this.appliedSeq = this.durableSeq = 0;
          this.checkpointDirty = true;
        }
        return true;
      }
      if (!logged)
        this.o.log.warn({ stream: PRESENCE_STREAM }, 'waiting for the gateway to create the stream');
      logged = true;
      await this.sleep(STREAM_POLL_MS);
    }
    return false;
  }

  private async consume(messages: ConsumerMessages): Promise<void> {
    let inBatch = 0;
    for await (const msg of messages) {
      this.failingSince = undefined;
      const event = this.parse(msg);
      if (event !== undefined) this.collect(this.tracker.apply(event, msg.seq));
      this.appliedSeq = msg.seq;
      this.pending.seq = msg.seq;
      // The iterator hands over what one pull brought; flush when it has no more buffered.
      if (messages.getPending() === 0 || ++inBatch >= FETCH_BATCH) {
        inBatch = 0;
        await this.flush();
      }
    }
  }

  private parse(msg: JsMsg): PresenceEvent | undefined {
    const event = parseJson(PresenceEvent, () => msg.json());
    // Tenant and device id become the KV key: one that KV refuses would stall every event behind it.
    // The gateway id keys connections and heartbeats: held to its grammar, it is 32 bytes at most.
    if (
      event !== undefined &&
      isTenant(event.tenant) &&
      isDeviceId(event.deviceId) &&
      isGatewayId(event.gateway)
    )
      return event;
    this.o.log.error(
      { seq: msg.seq, subject: msg.subject },
      'presence event does not match the contract: skipped',
    );
    return undefined;
  }

  private collect(changes: PresenceChanges): void {
    for (const state of changes.states)
      this.pending.states.set(presenceStateKey(state.tenant, state.deviceId), state);
    this.pending.rows.push(...changes.rows);
  }

  /**
   * Makes what was collected so far durable. Batches go one at a time, in the order they were
   * collected, so a device's states reach KV in the order the tracker produced them.
   */
  private flush(): Promise<void> {
    if (this.nextFlush === undefined) {
      this.nextFlush = this.flushed
        .then(() => {
          this.nextFlush = undefined;
          return this.persist(this.takePending());
        })
        .catch((err: unknown) => {
          this.broken = true;
          this.o.log.error({ err }, 'presence batch failed: nothing after it is checkpointed');
        });
      this.flushed = this.nextFlush;
    }
    return this.nextFlush;
  }

  private takePending(): Batch {
    const batch = this.pending;
    this.pending = emptyBatch();
    return batch;
  }

  private async persist(batch: Batch): Promise<void> {
    this.persistingSince = this.clock();
    try {
      this.waitingFor = 'status rows not written';
      if (batch.rows.length > 0) await this.retry('status rows not written', () => this.o.write(batch.rows));
      this.waitingFor = 'presence states not saved';
      const entries = [...batch.states];
      for (let i = 0; i < entries.length; i += PUT_CONCURRENCY) {
        await Promise.all(entries.slice(i, i + PUT_CONCURRENCY).map(([key, state]) => this.save(key, state)));
      }
    } catch (err) {
      this.broken = true;
      this.o.log.warn({ err, rows: batch.rows.length }, 'stopping: batch not durable, it will be replayed');
      return;
    } finally {
      this.persistingSince = undefined;
    }
    if (batch.seq !== undefined && !this.broken) {
      this.durableSeq = batch.seq;
      this.checkpointDirty = true;
    }
    await this.saveCheckpoint(false);
  }

  /**
   * Saves one device's state. A refusal that retrying cannot fix (the value over what the server
   * accepts) skips that device, which keeps its previous state: retrying it would hold every other
   * device's presence behind it for ever.
   */
  private async save(key: string, state: PresenceState): Promise<void> {
    const value = JSON.stringify(state);
    try {
      await this.retry('presence state not saved', () => this.kv.put(key, value), isPermanentPublishError);
    } catch (err) {
      if (!isPermanentPublishError(err)) throw err;
      this.o.onRefused?.(1);
      this.o.log.error(
        { err, key, bytes: Buffer.byteLength(value), connections: state.connections.length },
        'presence state refused by NATS: skipped, the device keeps its previous state',
      );
    }
  }

  private async saveCheckpoint(force: boolean): Promise<void> {
    if (!this.checkpointDirty || this.streamCreated === undefined) return;
    const now = this.clock();
    if (!force && now - this.lastCheckpointAt < PRESENCE_CHECKPOINT_INTERVAL_MS) return;
    const checkpoint: Checkpoint = { seq: this.durableSeq, streamCreated: this.streamCreated };
    try {
      await this.o.checkpoints.put(PRESENCE_CHECKPOINT_KEY, JSON.stringify(checkpoint));
    } catch (err) {
      this.o.log.warn({ err, seq: checkpoint.seq }, 'presence checkpoint not saved; retrying later');
      return;
    }
    if (this.durableSeq === checkpoint.seq) this.checkpointDirty = false;
    this.savedSeq = checkpoint.seq;
    this.lastCheckpointAt = now;
  }

  /** Retries for as long as the owner runs; once it stops, or for an error `final` picks, a failure is final. */
  private async retry<T>(
    what: string,
    fn: () => Promise<T>,
    final: (err: unknown) => boolean = () => false,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (this.stopping || final(err)) throw err;
        this.o.log.warn({ err, attempt }, `${what}; retrying`);
        await this.sleep(backoff(attempt));
      }
    }
  }

  /** A wait that stop() cuts short. */
  private sleep(ms: number): Promise<void> {
    return this.stopping ? Promise.resolve() : this.naps.sleep(ms);
  }
}

interface Batch {
  states: Map<string, PresenceState>;
  rows: DeviceStatusRow[];
  /** Last PRESENCE sequence applied into this batch, if any. */
  seq: number | undefined;
}

function emptyBatch(): Batch {
  return { states: new Map(), rows: [], seq: undefined };
}

function backoff(attempt: number): number {
  return backoffMs(attempt, MIN_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS);
}

function parseJson<T>(schema: z.ZodType<T>, json: () => unknown): T | undefined {
  try {
    const parsed = schema.safeParse(json());
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // not JSON
  }
}

async function readCheckpoint(checkpoints: KV, log: Logger): Promise<Checkpoint | undefined> {
  const entry = await checkpoints.get(PRESENCE_CHECKPOINT_KEY);
  if (entry?.operation !== 'PUT') return undefined;
  const checkpoint = parseJson(Checkpoint, () => entry.json());
  // Replaying everything is safe: the states' sequences skip what they already hold.
  if (checkpoint === undefined)
    log.error('presence checkpoint does not parse: replaying PRESENCE from the start');
  return checkpoint;
}

/** Every state in the bucket, read through one watcher rather than a get per key. */
async function loadStates(kv: KV, log: Logger): Promise<PresenceState[]> {
  if ((await kv.status()).values === 0) return [];
  const states: PresenceState[] = [];
  const watcher = await kv.watch();
  try {
    for await (const entry of watcher) {
      if (entry.operation === 'PUT') {
        const state = parseJson(PresenceState, () => entry.json());
        if (state !== undefined) states.push(state);
        else log.error({ key: entry.key }, 'presence state does not parse: the device starts over');
      }
      // The last entry present when the watch started arrives with nothing more pending.
      if (entry.delta === 0) break;
    }
  } finally {
    watcher.stop();
  }
  return states;
}
