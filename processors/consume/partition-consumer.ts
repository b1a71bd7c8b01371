import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { nanos } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import type { AlertTransition } from '../../contract/alerts.js';
import { type DecodedEvent, decodeCanonicalEvent } from '../../contract/decode-canonical-event.js';
import type { CanonicalEvent } from '../../contract/event.js';
import { TELEMETRY_STREAM, telemetryPartitionFilter } from '../../contract/subjects.js';
import type { AlertEngineOptions } from '../alerts/alert-engine.js';
import type { AlertRule } from '../alerts/alert-rules.js';
import { DeliveryGapError } from '../errors.js';
import type { LimitReached } from '../metrics.js';
import { type PartitionBatch, PartitionPipeline } from '../partition-pipeline.js';
import type { WindowResult } from '../windows/device-windows.js';
import type { PartitionWindowSettings } from '../windows/partition-windows.js';
import { type AckInfo, ackInfo, replyOf } from './ack-info.js';
import type { SavedCheckpoint } from './checkpoint-fit.js';

/**
 * Consumes one telemetry partition: transport only. Each message goes to the partition's pipeline
 * (partition-pipeline.ts: windows, alerts, lines), what it returns to `effects`; once that is durable,
 * the pipeline's checkpoint is saved in KV and JetStream is acknowledged up to it (ack policy "all":
 * one ack per checkpoint). The consumer owns the pipeline's one clock: wall time that stands still
 * while the partition is paused for a full sink.
 *
 * The checkpoint is the source of truth. A new owner of the partition recreates the durable
 * consumer to start right after the checkpointed sequence: messages a dead owner had received but
 * not acknowledged would otherwise wait out the ack wait before redelivery.
 */
export interface PartitionEffects {
  /**
   * Resolves when the batch is durable (or refused for good by the TSDB, which the effects report
   * themselves: holding the partition on a bad point would stop everything behind it). Rejects only
   * when it was NOT written (the sink closed first): nothing from that batch on is checkpointed, so
   * it replays. Never drops.
   */
  write(batch: PartitionBatch): Promise<void>;
  /** True while the sink holds more than it should: stop pulling. */
  readonly overloaded: boolean;
  /** Resolves once the sink takes work again (or is closing). */
  whenAccepting(): Promise<void>;
}

export interface PartitionObserver {
  events?(count: number): void;
  late?(count: number): void;
  duplicates?(count: number): void;
  invalid?(count: number): void;
  alerts?(transitions: AlertTransition[]): void;
  windowsEmitted?(results: WindowResult[]): void;
  checkpointed?(partition: number, ackSeq: number): void;
}

export interface PartitionConsumerOptions {
  partition: number;
  js: JetStreamClient;
  jsm: JetStreamManager;
  checkpoints: KV;
  effects: PartitionEffects;
  windows: PartitionWindowSettings;
  /** Alert rules evaluated on the partition's events (none when empty or left out). */
  rules?: readonly AlertRule[];
  /** DEVICE_STATE_TTL and MAX_FREED_DEVICES for the alert engine. */
  alertOptions?: Omit<AlertEngineOptions, 'onLimit'>;
  checkpointIntervalMs: number;
  /** CHECKPOINT_MAX_BYTES: what one checkpoint may take in KV (checkpoint-fit.ts). */
  checkpointMaxBytes?: number;
  onLimit?: LimitReached;
  log: Logger;
  observer?: PartitionObserver;
  clock?: () => number;
  /**
   * The consumer stopped on its own (its JetStream consumer vanished, an unexpected error). Its
   * in-memory windows hold more than the saved checkpoint, so it must be restarted from that
   * checkpoint, not resumed.
   */
  onFailure?: (partition: number, err: unknown) => void;
}

/** How long JetStream waits before redelivering: longer than any window is held open. */
const ACK_WAIT_MS = 10 * 60_000;
const FETCH_BATCH = 1_000;
/**
 * A pull lives this long; nats.js asks for heartbeats every half of it and re-pulls after two are
 * missed. Its 30 s default left a partition idle for 30 s when the consumer's leader died with the
 * pull request (a NATS cluster node lost); this costs a few more pull requests per partition.
 */
const PULL_EXPIRES_MS = 5_000;
const ACK_SAMPLE = 64;
/**
 * Messages a partition handles before yielding to the event loop. Received messages are handed out
 * through microtasks, and every partition's run in the same microtask queue: without yielding, 16
 * partitions' buffers (up to ~1,500 messages each) made one task of over a second, during which no
 * TSDB reply or lease renewal could be handled.
 */
const YIELD_EVERY = 100;

export const consumerName = (partition: number) => `processors_p${partition}`;
export const checkpointKey = (partition: number) => `partition.${partition}`;

interface Batch {
  /** False when the batch was not written: nothing from it on may be checkpointed. */
  written: Promise<boolean>;
  /** Taken for some batches only (see submit): building one visits every device of the partition. */
  checkpoint: SavedCheckpoint | undefined;
}

export class PartitionConsumer {
  private messages: ConsumerMessages | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly inFlight: Batch[] = [];
  /**
   * Messages kept for acknowledging: every ACK_SAMPLE-th and the last of each batch. Acking one
   * acknowledges everything before it (ack policy all), so a sample is enough, and it keeps memory
   * small while minute-long windows hold the checkpoint back.
   */
  private readonly ackables: JsMsg[] = [];
  private lastCheckpointAt = 0;
  private lastSavedSeq: number;
  private readonly clock: () => number;
  private settling: Promise<void> = Promise.resolve();
  /** Newest durable checkpoint not saved yet (saving is rate-limited to one per interval). */
  private pendingCheckpoint: SavedCheckpoint | undefined;
  private failed: Error | undefined;
  /** A batch was not written (sink closed): from then on nothing is checkpointed or acknowledged. */
  private broken = false;
  /** Messages received and not handed over yet. */
  private received = 0;
  /** The current message's sequences, read into this one object (ack-info.ts). */
  private readonly info: AckInfo = { streamSequence: 0, deliverySequence: 0, pending: 0 };
  private last: JsMsg | undefined;
  private handOverScheduled = false;
  /** True while the loop has yielded to the event loop with messages maybe still ready. */
  private yielding = false;
  private lastCheckpointTakenAt = Number.NEGATIVE_INFINITY;
  /** Set while the sink is overloaded: the loop waits on it before taking the next message. */
  private gate: Promise<void> | undefined;
  private wakeGate: (() => void) | undefined;
  /**
   * Wall time the pipeline's clock stood still, and since when it stands still now: while the
   * partition is gated (not pulling for an overloaded sink) or behind its stream (the last message
   * delivered said more were waiting). The windows' idle timeout and the absence rules must not
   * count either: a device is not quiet because we stopped reading it, or because its readings wait
   * in a backlog (a replay, a processor starved of CPU), and taking it as quiet would close its
   * windows on wall time and make the backlog late.
   */
  private stillMs = 0;
  private stillSince: number | undefined;
  private gated = false;
  private behind = false;
  /** Since when the checkpoint's required watermarks have not fitted CHECKPOINT_MAX_BYTES. */
  private checkpointOverSince: number | undefined;
  private caughtUp = false;

  /** The pipeline's clock: wall time that stands still while the partition is gated or behind. */
  private pipelineClock(): number {
    const now = this.clock();
    return now - this.stillMs - (this.stillSince === undefined ? 0 : now - this.stillSince);
  }

  /** Starts or stops the pipeline's clock as the partition becomes gated or behind, or neither. */
  private setStill(what: 'gated' | 'behind', on: boolean): void {
    if (what === 'gated') this.gated = on;
    else this.behind = on;
    const still = this.gated || this.behind;
    if (still && this.stillSince === undefined) this.stillSince = this.clock();
    else if (!still && this.stillSince !== undefined) {
      this.stillMs += this.clock() - this.stillSince;
      this.stillSince = undefined;
    }
  }

  private readonly pipeline: PartitionPipeline;

  private constructor(
    private readonly o: PartitionConsumerOptions,
    restored: SavedCheckpoint | undefined,
  ) {
    this.clock = o.clock ?? Date.now;
    this.lastSavedSeq = restored?.ackSeq ?? 0;
    this.pipeline = new PartitionPipeline(
      {
        windows: o.windows,
        rules: o.rules,
        alertOptions: o.alertOptions,
        checkpointMaxBytes: o.checkpointMaxBytes,
        onLimit: o.onLimit,
        onInvalid: (event: CanonicalEvent, err: unknown) => {
          o.observer?.invalid?.(1);
          o.log.error(
            { err, partition: o.partition, event: event.id },
            'event cannot be written as a line: skipped',
          );
        },
      },
      restored,
      this.clock(),
    );
  }

  static async start(o: PartitionConsumerOptions): Promise<PartitionConsumer> {
    const saved = await o.checkpoints.get(checkpointKey(o.partition));
    const checkpoint = saved?.operation === 'PUT' ? saved.json<SavedCheckpoint>() : undefined;
    const consumer = new PartitionConsumer(o, checkpoint);
    await consumer.attach(checkpoint?.ackSeq ?? 0);
    o.log.debug(
      { partition: o.partition, from: (checkpoint?.ackSeq ?? 0) + 1 },
      'partition consumer started',
    );
    return consumer;
  }

  get partition(): number {
    return this.o.partition;
  }

  get ackSeq(): number {
    return this.lastSavedSeq;
  }

  /**
   * Why the partition cannot checkpoint (and so acknowledge) any more: more devices with readings
   * in the replay range than CHECKPOINT_MAX_BYTES holds. Undefined while it can.
   */
  get checkpointBlocked(): string | undefined {
    return this.checkpointOverSince === undefined
      ? undefined
      : `partition ${this.o.partition}: checkpoint over CHECKPOINT_MAX_BYTES`;
  }

  /** Stops pulling, waits for what is in flight to be durable, saves the checkpoint. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wakeGate?.();
    await this.messages?.close();
    await this.running;
    this.flushWindows(true);
    await this.settling;
    // Its alerts are in the checkpoint; the next owner restores them.
    await this.settle(true);
    this.o.log.debug(
      { partition: this.o.partition, ackSeq: this.lastSavedSeq },
      'partition consumer stopped',
    );
  }

  private async attach(afterSeq: number): Promise<void> {
    const name = consumerName(this.o.partition);
    await this.o.jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
    await this.o.jsm.consumers.add(TELEMETRY_STREAM, {
      durable_name: name,
      filter_subject: telemetryPartitionFilter(this.o.partition),
      ack_policy: AckPolicy.All,
      ack_wait: nanos(ACK_WAIT_MS),
      max_ack_pending: -1,
      ...(afterSeq > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: afterSeq + 1 }
        : { deliver_policy: DeliverPolicy.All }),
    });
    const consumer = await this.o.js.consumers.get(TELEMETRY_STREAM, name);
    this.messages = await consumer.consume({ max_messages: FETCH_BATCH, expires: PULL_EXPIRES_MS });
    this.running = this.loop(this.messages);
    void this.watch(this.messages);
  }

  /**
   * nats.js keeps the iterator open when the consumer or stream goes away and only reports it as a
   * status; waiting there would stall the partition for good, so it ends the consumer as failed.
   */
  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (
        status.type === 'consumer_deleted' ||
        status.type === 'consumer_not_found' ||
        status.type === 'stream_not_found'
      ) {
        if (this.stopping) return;
        this.failed = new Error(`JetStream reported ${status.type}`);
        await messages.close();
        return;
      }
    }
  }

  private async loop(messages: ConsumerMessages): Promise<void> {
    let sinceSample = 0;
    let sinceYield = 0;
    // The consumer is new at each attach, so its deliveries count from 1, one more per message sent.
    let nextDelivery = 1;
    try {
      for await (const msg of messages) {
        if (this.gate) await this.gate;
        // A jump forward means deliveries were lost in flight; a step back (a new leader sending
        // again what the old one had sent) only repeats messages, which the windows deduplicate.
        const info = ackInfo(replyOf(msg), this.info) ?? msg.info;
        const delivery = info.deliverySequence;
        if (delivery > nextDelivery) throw new DeliveryGapError(this.o.partition, nextDelivery, delivery);
        nextDelivery = delivery + 1;
        // More stored than delivered: whatever a device sent meanwhile is still to come.
        const behind = info.pending > 0;
        if (behind !== this.behind) this.setStill('behind', behind);
        const event = this.parse(msg);
        this.last = msg;
        if (++sinceSample === ACK_SAMPLE) {
          sinceSample = 0;
          this.ackables.push(msg);
        }
        if (event) {
          this.received++;
          const outcome = this.pipeline.add(event, info.streamSequence, this.pipelineClock());
          if (outcome.duplicate) this.o.observer?.duplicates?.(1);
          if (outcome.lateFor.length > 0) this.o.observer?.late?.(1);
          if (outcome.metricsRefused > 0) this.o.onLimit?.('WINDOW_MAX_METRICS', outcome.metricsRefused);
        }
        if (!this.caughtUp && info.pending === 0) {
          // Everything stored when this was sent has been delivered: the replay is over.
          this.caughtUp = true;
          this.pipeline.replayCaughtUp();
        }
        if (this.received >= FETCH_BATCH) this.handOver();
        if (++sinceYield >= YIELD_EVERY) {
          sinceYield = 0;
          this.yielding = true;
          await new Promise((r) => setImmediate(r));
          this.yielding = false;
        }
        this.scheduleHandOver();
      }
      this.handOver();
    } catch (err) {
      if (this.stopping) return;
      this.o.log.error({ partition: this.o.partition, err }, 'partition consumer failed');
      this.o.onFailure?.(this.o.partition, err);
      return;
    }
    if (!this.stopping) {
      const err = this.failed ?? new Error('consumer ended unexpectedly');
      this.o.log.error({ partition: this.o.partition, err }, 'partition consumer failed');
      this.o.onFailure?.(this.o.partition, err);
    }
  }

  /**
   * Messages already received arrive through microtasks; setImmediate runs once none is ready, so a
   * batch is handed over as soon as the pull that brought it is used up (not when nats.js says
   * nothing is pending: it overstates that, and the tail of a burst would wait for the next message).
   * A hand-over that comes due while the loop itself is yielding is left to the loop's next turn.
   */
  private scheduleHandOver(): void {
    if (this.handOverScheduled || this.last === undefined) return;
    this.handOverScheduled = true;
    setImmediate(() => {
      this.handOverScheduled = false;
      if (!this.yielding) this.handOver();
    });
  }

  /** Hands what was received since the last hand-over to the effects; closes the gate when they are full. */
  private handOver(): void {
    const last = this.last;
    if (last === undefined) return;
    if (this.ackables.at(-1) !== last) this.ackables.push(last);
    this.last = undefined;
    this.received = 0;
    // Only devices with new readings can have windows due on event time; the rest are for flushWindows.
    this.submit(this.pipeline.take(this.pipelineClock(), true), false);
    if (this.o.effects.overloaded && !this.gate && !this.stopping) {
      this.o.onLimit?.('TSDB_MAX_PENDING_LINES');
      this.setStill('gated', true);
      this.gate = new Promise<void>((resolve) => {
        this.wakeGate = resolve;
        void this.o.effects.whenAccepting().then(resolve);
      }).then(() => {
        this.setStill('gated', false);
        this.gate = undefined;
        this.wakeGate = undefined;
      });
    }
  }

  /**
   * Emits windows and alerts due on time alone (quiet devices) and lets a checkpoint through even
   * when no message arrives; the processor calls it every checkpoint interval.
   */
  flushWindows(forceCheckpoint = false): void {
    this.submit(this.pipeline.take(this.pipelineClock(), false), forceCheckpoint);
  }

  private parse(msg: JsMsg): DecodedEvent | undefined {
    const event = decodeCanonicalEvent(msg.data);
    if (event) return event;
    // Only the gateway writes TELEMETRY; a bad event is a bug there. Skip it rather than stall the partition.
    this.o.observer?.invalid?.(1);
    this.o.log.error(
      { partition: this.o.partition, seq: msg.seq },
      'event does not match the contract: skipped',
    );
    return undefined;
  }

  private submit(batch: PartitionBatch, forceCheckpoint: boolean) {
    if (batch.events > 0) this.o.observer?.events?.(batch.events);
    if (batch.windows.length > 0) this.o.observer?.windowsEmitted?.(batch.windows);
    if (batch.alerts.length > 0) this.o.observer?.alerts?.(batch.alerts);
    const written = this.o.effects.write(batch).then(
      () => true,
      (err: unknown) => {
        if (!this.stopping)
          this.o.log.error({ partition: this.o.partition, err }, 'a batch was not written; it will replay');
        return false;
      },
    );
    // The checkpoint is taken now: it describes exactly what this batch and those before produced.
    // Saving is rate-limited to one per interval anyway, so taking one twice per interval is enough.
    const now = this.clock();
    const take = forceCheckpoint || now - this.lastCheckpointTakenAt >= this.o.checkpointIntervalMs / 2;
    if (take) this.lastCheckpointTakenAt = now;
    const checkpoint = take ? this.takeCheckpoint() : undefined;
    this.inFlight.push({ written, checkpoint });
    this.settling = this.settling.then(() => this.settle(false));
  }

  /** The checkpoint as it stands, fitted into CHECKPOINT_MAX_BYTES; undefined when it cannot be. */
  private takeCheckpoint(): SavedCheckpoint | undefined {
    const fitted = this.pipeline.checkpoint();
    if (fitted.checkpoint === undefined || fitted.foldedWatermarks + fitted.alertsLeftOut > 0)
      this.o.onLimit?.('CHECKPOINT_MAX_BYTES');
    if (fitted.checkpoint === undefined) {
      if (this.checkpointOverSince === undefined)
        this.o.log.error(
          { partition: this.o.partition },
          'more devices in the replay range than CHECKPOINT_MAX_BYTES holds: not checkpointing or acknowledging until fewer are',
        );
      this.checkpointOverSince ??= this.clock();
      return undefined;
    }
    if (this.checkpointOverSince !== undefined)
      this.o.log.info({ partition: this.o.partition }, 'checkpoint fits again');
    this.checkpointOverSince = undefined;
    if (fitted.alertsLeftOut > 0)
      this.o.log.warn(
        { partition: this.o.partition, alerts: fitted.alertsLeftOut },
        'firing alerts left out of the checkpoint (CHECKPOINT_MAX_BYTES): a new owner may fire them again',
      );
    return fitted.checkpoint;
  }

  /** Once the batches handed over so far are durable: checkpoint (at most once per interval) and ack. */
  private async settle(force: boolean): Promise<void> {
    while (this.inFlight.length > 0 && !this.broken) {
      if (!(await this.inFlight[0]!.written)) {
        // Batches are written in order: once one is not, none after it may count either.
        this.broken = true;
        this.inFlight.length = 0;
        break;
      }
      const ready = this.inFlight.shift()!;
      if (ready.checkpoint) this.pendingCheckpoint = ready.checkpoint;
    }
    const checkpoint = this.pendingCheckpoint;
    if (!checkpoint) return;
    const now = this.clock();
    if (!force && now - this.lastCheckpointAt < this.o.checkpointIntervalMs) return;
    this.pendingCheckpoint = undefined;
    try {
      await this.o.checkpoints.put(checkpointKey(this.o.partition), JSON.stringify(checkpoint));
    } catch (err) {
      // Not saved: keep it for the next attempt; nothing is acknowledged past the last saved one.
      this.pendingCheckpoint ??= checkpoint;
      this.o.log.warn({ partition: this.o.partition, err }, 'checkpoint not saved; retrying');
      return;
    }
    this.lastSavedSeq = checkpoint.ackSeq;
    this.lastCheckpointAt = now;
    this.o.observer?.checkpointed?.(this.o.partition, checkpoint.ackSeq);
    let newest: JsMsg | undefined;
    while (this.ackables.length > 0 && this.ackables[0]!.seq <= checkpoint.ackSeq)
      newest = this.ackables.shift();
    newest?.ack();
  }
}
