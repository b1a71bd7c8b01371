import {
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { Naps } from '../../common/naps.js';
import { decodeDeviceWindowBatch } from '../../contract/decode-device-window-batch.js';
import type { DeviceWindowBatch } from '../../contract/event.js';
import { WINDOWS_STREAM } from '../../contract/subjects.js';
import type { LimitReached } from '../metrics.js';
import { DEFAULT_ROLE_STALL_TIMEOUT_MS } from '../roles.js';
import { DEFAULT_ROLLUP_HORIZON_MS, FleetRollup, type FleetRow, fleetRowKey } from './fleet-rollup.js';

/**
 * The fleet rollup, run by whichever processor instance holds the rollup role: reads every device
 * window emission from stream WINDOWS, merges them (FleetRollup) and hands changed fleet rows to
 * `write` every flush interval.
 *
 * No durable consumer, no acks, no checkpoint: the state is a function of the stream alone. Every
 * message that can still change a live fleet window (one ending at or after now − H) was stored at
 * or after its end − H ≥ now − 2H, so replaying the stream from now − 2H rebuilds every live window
 * exactly as the previous owner had it. Windows that ended earlier may come back partial from that
 * replay, but they are already past retention and FleetRollup never writes them. Rows are written
 * whole (same series and time), so the new owner rewriting the old one's last rows changes nothing.
 *
 * Nothing is written while catching up: mid-replay, a live window holds only part of what the old
 * owner already wrote for it, and writing it would briefly replace a complete row with a partial one.
 */
export interface RollupObserver {
  /** Device windows outside the horizon (e.g. a device replaying hours-old data), left out. */
  skipped?(count: number): void;
  /** Fleet rows durably written. */
  rows?(count: number): void;
  /** Messages that are not a DeviceWindowBatch: a bug on the publishing side, skipped. */
  invalid?(count: number): void;
}

export interface RollupOwnerOptions {
  nc: NatsConnection;
  /**
   * The horizon H: at least largest window + allowed lateness + idle timeout + a margin (which also
   * covers clock skew between this host and the NATS servers). Stream WINDOWS must keep 3×H
   * (ensureWindowsStream).
   */
  horizonMs?: number;
  flushIntervalMs?: number;
  /** Resolves once the rows are durable. A rejection keeps them for the next flush. */
  write: (rows: FleetRow[]) => Promise<void>;
  log: Logger;
  observer?: RollupObserver;
  clock?: () => number;
  /** How often to look for stream WINDOWS while it does not exist, and to retry after an error. */
  retryIntervalMs?: number;
  /** FLEET_MAX_ROWS_PER_TENANT; the default when left out. */
  maxRowsPerTenant?: number;
  onLimit?: LimitReached;
  /** How long the same work may be stuck before stalled() says so (ROLE_STALL_TIMEOUT). */
  stallTimeoutMs?: number;
}

export const DEFAULT_FLUSH_INTERVAL_MS = 1_000;
export const DEFAULT_RETRY_INTERVAL_MS = 1_000;
/** Replay span on start, in horizons: see the module comment. */
export const REPLAY_HORIZONS = 2;
const FETCH_BATCH = 1_000;

export class RollupOwner {
  private readonly rollup: FleetRollup;
  private readonly clock: () => number;
  private readonly flushIntervalMs: number;
  private readonly retryIntervalMs: number;
  private readonly startTime: string;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private caughtUp = false;
  /** Stream sequence that was last when consuming began: reaching it means the replay is done. */
  private catchUpSeq: number | undefined;
  /** Last message merged; a recreated consumer resumes right after it. */
  private lastSeq = 0;
  private messages: ConsumerMessages | undefined;
  private consuming: Promise<void> = Promise.resolve();
  private flushing: Promise<void> = Promise.resolve();
  /** Collected rows not durable yet, by fleet window: a newer row of the same window replaces it. */
  private readonly unwritten = new Map<string, FleetRow>();
  private readonly naps = new Naps();
  /** Since when a write has been waiting for the TSDB. */
  private writingSince: number | undefined;
  /** Since when the stream could not be consumed, without a message in between. */
  private failingSince: number | undefined;
  private lastExpireAt = Number.NEGATIVE_INFINITY;

  private constructor(
    private readonly o: RollupOwnerOptions,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {
    const horizonMs = o.horizonMs ?? DEFAULT_ROLLUP_HORIZON_MS;
    this.rollup = new FleetRollup({
      horizonMs,
      ...(o.maxRowsPerTenant === undefined ? {} : { maxRowsPerTenant: o.maxRowsPerTenant }),
      ...(o.onLimit ? { onLimit: o.onLimit } : {}),
    });
    this.clock = o.clock ?? Date.now;
    this.flushIntervalMs = o.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    this.retryIntervalMs = o.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
    this.startTime = new Date(this.clock() - REPLAY_HORIZONS * horizonMs).toISOString();
  }

  /** Starts in the background: waits for stream WINDOWS if need be, replays, then writes. */
  static async start(o: RollupOwnerOptions): Promise<RollupOwner> {
    // No API check: JetStream being unreachable right now is retried by the consume loop.
    const jsm = await jetstreamManager(o.nc, { checkAPI: false });
    const owner = new RollupOwner(o, jetstream(o.nc), jsm);
    owner.consuming = owner.consume();
    owner.flushing = owner.flushLoop();
    o.log.info({ from: owner.startTime, horizonMs: owner.rollup.horizonMs }, 'rollup owner started');
    return owner;
  }

  /** True once the replay reached the end of the stream and rows are being written. */
  get isCaughtUp(): boolean {
    return this.caughtUp;
  }

  /** Fleet windows held now (every group counted). */
  get fleetWindows(): number {
    return this.rollup.size;
  }

  /**
   * Why the fleet rollup cannot make progress, once a write has waited longer than the stall
   * timeout for the TSDB, or the stream has not been consumable that long; undefined otherwise.
   */
  stalled(): string | undefined {
    const now = this.clock();
    const timeout = this.o.stallTimeoutMs ?? DEFAULT_ROLE_STALL_TIMEOUT_MS;
    if (this.writingSince !== undefined && now - this.writingSince >= timeout)
      return `fleet rows not written for ${Math.round((now - this.writingSince) / 1_000)} s`;
    if (this.failingSince !== undefined && now - this.failingSince >= timeout)
      return `${WINDOWS_STREAM} not consumed for ${Math.round((now - this.failingSince) / 1_000)} s`;
    return undefined;
  }

  /** Stops consuming, then writes what changed one last time (waiting for the write). */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.naps.wakeAll();
    await this.messages?.close();
    await this.consuming;
    await this.flushing;
    if (this.caughtUp) await this.flush();
    if (this.unwritten.size > 0) {
      // The next owner rewrites every window still within the horizon once it has caught up.
      this.o.log.warn({ rows: this.unwritten.size }, 'fleet rows not written before stopping');
    }
    this.o.log.info({ lastSeq: this.lastSeq, caughtUp: this.caughtUp }, 'rollup owner stopped');
  }

  private async consume(): Promise<void> {
    let waiting = false;
    while (!this.stopping) {
      let messages: ConsumerMessages;
      try {
        messages = await this.attach();
      } catch (err) {
        if (isStreamNotFound(err)) {
          if (!waiting) this.o.log.info({ stream: WINDOWS_STREAM }, 'waiting for the stream to exist');
          waiting = true;
        } else {
          this.o.log.warn({ stream: WINDOWS_STREAM, err }, 'cannot consume the stream; retrying');
        }
        this.failingSince ??= this.clock();
        await this.sleep(this.retryIntervalMs);
        continue;
      }
      waiting = false;
      this.failingSince = undefined;
      if (this.stopping) {
        await messages.close();
        return;
      }
      this.messages = messages;
      const watching = this.watch(messages);
      try {
        for await (const msg of messages) this.handle(msg);
      } catch (err) {
        if (!this.stopping) this.o.log.warn({ err }, 'consuming the stream failed; resuming');
      }
      await messages.close();
      await watching;
      // A consumer that keeps failing right away must not spin; losing one is rare.
      await this.sleep(this.retryIntervalMs);
    }
  }

  private async attach(): Promise<ConsumerMessages> {
    const info = await this.jsm.streams.info(WINDOWS_STREAM);
    this.catchUpSeq ??= info.state.last_seq;
    // An ordered consumer: ephemeral, in order, no acks (see the module comment). The first starts
    // at the replay start time; one recreated after a failure resumes right after the last message.
    const consumer = await this.js.consumers.get(
      WINDOWS_STREAM,
      this.lastSeq > 0
        ? { opt_start_seq: this.lastSeq + 1 }
        : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: this.startTime },
    );
    // Nothing to replay: no message will come to say so.
    if (!this.caughtUp && (await consumer.info(true)).num_pending === 0) this.markCaughtUp();
    return consumer.consume({ max_messages: FETCH_BATCH });
  }

  /**
   * nats.js (3.4) recreates a lost ordered consumer from its first config plus a start sequence;
   * for one created by start time the server refuses that config (start sequence and start time
   * both set), and it retries forever without delivering. So on the first sign of trouble the
   * iterator is closed and the loop recreates the consumer itself, after the last message merged.
   */
  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (
        status.type === 'reset' ||
        status.type === 'consumer_deleted' ||
        status.type === 'stream_not_found'
      ) {
        if (!this.stopping) {
          this.o.log.info({ status: status.type, lastSeq: this.lastSeq }, 'stream consumer lost; recreating');
        }
        await messages.close();
        return;
      }
    }
  }

  private handle(msg: JsMsg): void {
    // A recreated consumer could overlap what the previous one delivered; stream order is the truth.
    if (msg.seq <= this.lastSeq) return;
    this.lastSeq = msg.seq;
    // Windows past the horizon go even while a write waits for the TSDB (flush() expires them
    // too, but it waits with the write): otherwise a TSDB outage would hold every window it lasts.
    const now = this.clock();
    if (now - this.lastExpireAt >= this.flushIntervalMs) {
      this.lastExpireAt = now;
      this.rollup.expire(now);
    }
    const streamTimeMs = Number(msg.timestampNanos / 1_000_000n);
    for (const dw of this.parse(msg) ?? []) {
      if (this.rollup.add(dw, streamTimeMs) === 'skipped') {
        this.o.observer?.skipped?.(1);
        this.o.log.debug(
          {
            tenant: dw.tenant,
            deviceId: dw.deviceId,
            metric: dw.metric,
            window: dw.window,
            startMs: dw.startMs,
            streamTimeMs,
          },
          'device window outside the rollup horizon: skipped',
        );
      }
    }
    // pending is what the server still had for this consumer when it sent the message; under a
    // steady flow it may never be 0, hence the sequence that was last when consuming began.
    if (
      !this.caughtUp &&
      (msg.info.pending === 0 || msg.seq >= (this.catchUpSeq ?? Number.POSITIVE_INFINITY))
    )
      this.markCaughtUp();
  }

  private parse(msg: JsMsg): DeviceWindowBatch | undefined {
    const batch = decodeDeviceWindowBatch(msg.data);
    if (batch) return batch;
    // Only processors publish on WINDOWS; skipping a bad message keeps every other window going.
    this.o.observer?.invalid?.(1);
    this.o.log.error(
      { seq: msg.seq, subject: msg.subject },
      'device window batch does not match the contract: skipped',
    );
    return undefined;
  }

  private markCaughtUp(): void {
    this.caughtUp = true;
    this.o.log.info({ lastSeq: this.lastSeq, fleetWindows: this.rollup.size }, 'rollup owner caught up');
  }

  private async flushLoop(): Promise<void> {
    while (!this.stopping) {
      await this.flush();
      await this.sleep(this.flushIntervalMs);
    }
  }

  private async flush(): Promise<void> {
    const now = this.clock();
    if (!this.caughtUp) {
      // Keeps memory bounded while replaying the oldest part of the stream, whose windows are dead.
      this.rollup.expire(now);
      return;
    }
    for (const row of this.rollup.collect(now)) this.unwritten.set(fleetRowKey(row), row);
    if (this.unwritten.size === 0) return;
    const rows = [...this.unwritten.values()];
    this.unwritten.clear();
    // Kept across failed attempts: rows the TSDB keeps refusing are no progress either.
    this.writingSince ??= now;
    try {
      await this.o.write(rows);
    } catch (err) {
      // Rows are never dropped: kept (even past retention: they were complete when collected) and
      // written with whatever else changed at the next flush.
      for (const row of rows) {
        const key = fleetRowKey(row);
        if (!this.unwritten.has(key)) this.unwritten.set(key, row);
      }
      this.o.log.warn({ err, rows: rows.length }, 'fleet rows not written; retrying at the next flush');
      return;
    }
    this.writingSince = undefined;
    this.o.observer?.rows?.(rows.length);
  }

  private sleep(ms: number): Promise<void> {
    return this.stopping ? Promise.resolve() : this.naps.sleep(ms);
  }
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}
