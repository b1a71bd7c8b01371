import { HttpError, InfluxDB, type WriteApi } from '@influxdata/influxdb-client';
import { backoffMs } from '../../common/backoff.js';
import type { Logger } from '../../common/logger.js';
import { Naps } from '../../common/naps.js';
import { DEFAULT_TSDB_MAX_PENDING_LINES, MAX_FLUSH_INTERVAL_MS } from '../config.js';
import { InfluxWriteRejectedError, InfluxWriterClosedError, InfluxWriterConfigError } from '../errors.js';
import { WRITE_PRECISION } from './lines.js';

/**
 * The InfluxDB sink. Its one promise: `write(lines)` resolves only once InfluxDB has answered 2xx for
 * every one of those lines (built by lines.ts), and never drops a line. The caller acknowledges the
 * JetStream messages behind the lines only then, so a line that is not written stays unacknowledged
 * and is redelivered.
 *
 * Why not the library's WriteApi as is: it retries `maxRetries` times within `maxRetryTime`, then logs
 * and drops the lines (writeFailed is told, nobody waits), and its retry buffer sheds the oldest lines
 * past `maxBufferLines`. Its flush interval defaults to 60 s. So the batching, the waiting and the
 * retrying live here, and the library does what it is good at: escaping, gzip and the HTTP
 * call, through a WriteApi configured never to batch, flush or retry on its own (maxRetries 0, and
 * writeFailed hands the error back to us instead of logging it).
 *
 * - Batches of at most `batchLines` lines, sent as soon as a batch is full, and no line waits longer
 *   than `flushIntervalMs` (≤ 1 s) before it is sent. By default one request is in flight at a time,
 *   which keeps the order of the lines: a window written again with corrected values must land after
 *   its first version, or InfluxDB would keep the stale one. `maxInFlight` > 1 overlaps requests (a
 *   request's round trip, not the TSDB, was the limit under load) for lines whose order does not
 *   matter: each (series, time) written once, or always with the same values, as raw telemetry is.
 * - Transient failures (connection refused or reset, timeout, 5xx, 429, and also 401/403/404: a wrong
 *   token or a missing bucket is a configuration fault that dead-lettering every message would turn
 *   into data loss) are retried for as long as the writer is open, with exponential backoff from
 *   `minRetryDelayMs` capped at `maxRetryDelayMs`, jittered, honouring Retry-After. Meanwhile new
 *   writes queue up: `pendingLines` grows and `overloaded` turns true past `highWaterLines`, which is
 *   the caller's signal to stop pulling (the writer itself never refuses or sheds lines while open).
 * - Rejections that blame the data (400 bad line protocol, 413 too large, 422 unprocessable, e.g. out
 *   of retention) would block the queue forever if retried. The batch is split along write() calls
 *   and the halves re-sent until the write() calls that InfluxDB refuses on their own are found; those
 *   reject with InfluxWriteRejectedError (code INFLUX_WRITE_REJECTED) for the caller to dead-letter,
 *   the other writes in the batch resolve, and the queue moves on. A write() is all or nothing, so
 *   one write() per message (or per small group) keeps a bad message from failing its neighbours.
 *   InfluxDB writes the valid lines of a partially bad batch; re-sending them overwrites them with
 *   the same values.
 * - `close()` sends what it can within a grace period, then rejects every unwritten write() with
 *   InfluxWriterClosedError (code INFLUX_WRITER_CLOSED) and logs how many lines: the caller has not
 *   acknowledged them, so they come back on the next start.
 */
export const DEFAULT_BATCH_LINES = 5_000;
export const DEFAULT_FLUSH_INTERVAL_MS = 1_000;
export const DEFAULT_MIN_RETRY_DELAY_MS = 100;
export const DEFAULT_MAX_RETRY_DELAY_MS = 5_000;
/** Four full batches (TSDB_MAX_PENDING_LINES): enough to ride out a slow request, small enough to stop pulling early. */
export const DEFAULT_HIGH_WATER_LINES = DEFAULT_TSDB_MAX_PENDING_LINES;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_CLOSE_GRACE_MS = 5_000;
/** The library's default: smaller bodies cost more to gzip than they save. */
export const DEFAULT_GZIP_THRESHOLD_BYTES = 1_000;

/** Statuses that blame the lines, not the server: re-sending the same lines cannot succeed. */
const REJECTED_STATUSES = new Set([400, 413, 422]);

export interface InfluxWriterOptions {
  url: string;
  token: string;
  org: string;
  bucket: string;
  /** Lines per HTTP request, at most. Default 5000. */
  batchLines?: number;
  /** Requests on their way at once; above 1 only for lines whose order does not matter. Default 1. */
  maxInFlight?: number;
  /** Longest a line waits before it is sent when no batch fills up; 1–1000 ms. Default 1000. */
  flushIntervalMs?: number;
  /** First retry delay, doubled on each further failure. Default 100 ms. */
  minRetryDelayMs?: number;
  /** Retry delay cap. Default 5000 ms. */
  maxRetryDelayMs?: number;
  /** `overloaded` from this many pending lines on. Default 20 000. */
  highWaterLines?: number;
  /** Socket timeout of one request; a timeout is retried. Default 10 000 ms. */
  requestTimeoutMs?: number;
  /** How long `close()` keeps trying to send before it gives up on what is left. Default 5000 ms. */
  closeGraceMs?: number;
  /** Request bodies larger than this are gzipped. Default 1000 bytes. */
  gzipThresholdBytes?: number;
  logger?: Logger;
  observer?: InfluxWriterObserver;
}

/** Hooks for metrics; called synchronously, exceptions are logged and ignored. */
export interface InfluxWriterObserver {
  /** InfluxDB accepted a request: its lines, the request's own duration, and how long its oldest line waited since write(). */
  batchWritten?(event: { lines: number; requestMs: number; waitMs: number; attempts: number }): void;
  /** A request failed transiently and will be re-sent after delayMs. */
  retry?(event: { lines: number; attempt: number; delayMs: number; error: Error }): void;
  /** InfluxDB refused the lines of one write() for good; that write() rejects. */
  writeRejected?(event: { lines: number; error: InfluxWriteRejectedError }): void;
}

export interface CloseResult {
  /** Lines whose write() was rejected because the grace period ended first. */
  unwrittenLines: number;
}

/** One write() call. */
interface Owner {
  readonly id: number;
  /** Lines not yet accepted by InfluxDB. */
  remaining: number;
  settled: boolean;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** A write()'s lines in the queue; `next` is the first not yet taken into a batch. */
interface Segment {
  readonly owner: Owner;
  readonly lines: readonly string[];
  next: number;
  readonly enqueuedAt: number;
}

/** The lines of one write() inside a batch. */
interface Part {
  readonly owner: Owner;
  readonly lines: readonly string[];
}

type PostOutcome = 'ok' | 'aborted' | HttpError;

function positiveInt(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new InfluxWriterConfigError(`${name} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

function retryAfterMs(error: Error): number {
  if (!(error instanceof HttpError)) return 0;
  const header = error.headers?.['retry-after'];
  // RFC 9110 §10.2.3: delay-seconds (the HTTP-date form is not used by InfluxDB).
  const seconds = Number(Array.isArray(header) ? header[0] : header);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1_000 : 0;
}

function isRejection(error: Error): error is HttpError {
  return error instanceof HttpError && REJECTED_STATUSES.has(error.statusCode);
}

export class InfluxWriter {
  readonly batchLines: number;
  readonly flushIntervalMs: number;
  readonly highWaterLines: number;
  readonly maxInFlight: number;
  private readonly minRetryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly closeGraceMs: number;
  private readonly logger: Logger | undefined;
  private readonly observer: InfluxWriterObserver;
  private readonly api: WriteApi;

  private readonly queue: Segment[] = [];
  private head = 0;
  /** Lines in the queue not yet taken into a batch. */
  private queuedLines = 0;
  /** Lines written but neither accepted nor failed. */
  private pending = 0;
  /** Insertion order is id order, so the first entry is the oldest unsettled write(). */
  private readonly unsettled = new Set<Owner>();
  private nextOwnerId = 1;
  /** write() calls with an id up to this are sent now, without waiting for the interval. */
  private flushUpTo = 0;
  private flushWaiters: Array<{ upTo: number; resolve: () => void }> = [];
  private capacityWaiters: Array<() => void> = [];
  private state: 'open' | 'closing' | 'closed' = 'open';
  private aborted = false;
  /** Requests on their way (each with its retries). */
  private inFlight = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  /** Retry delays, cut short when the writer is aborted. */
  private readonly naps = new Naps();
  private closing: Promise<CloseResult> | undefined;

  constructor(options: InfluxWriterOptions) {
    this.batchLines = positiveInt('batchLines', options.batchLines ?? DEFAULT_BATCH_LINES);
    this.flushIntervalMs = positiveInt(
      'flushIntervalMs',
      options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS,
      MAX_FLUSH_INTERVAL_MS,
    );
    this.minRetryDelayMs = positiveInt(
      'minRetryDelayMs',
      options.minRetryDelayMs ?? DEFAULT_MIN_RETRY_DELAY_MS,
    );
    this.maxRetryDelayMs = positiveInt(
      'maxRetryDelayMs',
      options.maxRetryDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS,
    );
    if (this.maxRetryDelayMs < this.minRetryDelayMs) {
      throw new InfluxWriterConfigError('maxRetryDelayMs must not be below minRetryDelayMs');
    }
    this.maxInFlight = positiveInt('maxInFlight', options.maxInFlight ?? 1, 16);
    this.highWaterLines = positiveInt('highWaterLines', options.highWaterLines ?? DEFAULT_HIGH_WATER_LINES);
    this.closeGraceMs = positiveInt('closeGraceMs', options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS);
    const timeout = positiveInt('requestTimeoutMs', options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
    this.logger = options.logger;
    this.observer = options.observer ?? {};
    this.api = new InfluxDB({ url: options.url, token: options.token, timeout }).getWriteApi(
      options.org,
      options.bucket,
      WRITE_PRECISION,
      {
        // Never batch, flush or retry inside the library: one writeRecords + flush = one request.
        batchSize: this.batchLines + 1,
        maxBatchBytes: Number.MAX_SAFE_INTEGER,
        flushInterval: 0,
        maxRetries: 0,
        gzipThreshold: options.gzipThresholdBytes ?? DEFAULT_GZIP_THRESHOLD_BYTES,
        // Returning a promise makes the library settle the flush with it instead of logging the error.
        writeFailed: (error: Error) => Promise.reject(error),
      },
    );
  }

  /** Lines handed to write() and not yet accepted by InfluxDB nor failed. */
  get pendingLines(): number {
    return this.pending;
  }

  /** True from `highWaterLines` pending lines on: stop pulling messages until `whenAccepting()`. */
  get overloaded(): boolean {
    return this.pending >= this.highWaterLines;
  }

  /** Open and not overloaded. */
  get accepting(): boolean {
    return this.state === 'open' && !this.overloaded;
  }

  /** Resolves when the writer accepts work again (below the high-water mark), or once it is closing. */
  whenAccepting(): Promise<void> {
    if (this.state !== 'open' || !this.overloaded) return Promise.resolve();
    return new Promise((resolve) => this.capacityWaiters.push(resolve));
  }

  /**
   * Queues the lines; resolves when InfluxDB has accepted all of them. Rejects with
   * InfluxWriteRejectedError when InfluxDB refuses them for good, InfluxWriterClosedError when the
   * writer is closed (or closes before they are written). While InfluxDB is unreachable it stays
   * pending. The array is kept until written: do not change it afterwards.
   */
  write(lines: readonly string[]): Promise<void> {
    if (this.state !== 'open')
      return Promise.reject(new InfluxWriterClosedError('the InfluxDB writer is closed'));
    if (lines.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const owner: Owner = {
        id: this.nextOwnerId++,
        remaining: lines.length,
        settled: false,
        resolve,
        reject,
      };
      this.unsettled.add(owner);
      this.queue.push({ owner, lines, next: 0, enqueuedAt: Date.now() });
      this.queuedLines += lines.length;
      this.pending += lines.length;
      if (this.queuedLines >= this.batchLines) this.kick();
      else this.armFlushTimer();
    });
  }

  /** Sends what is queued now; resolves when every write() made before the call has settled. Never rejects. */
  flush(): Promise<void> {
    const upTo = this.nextOwnerId - 1;
    if (this.oldestUnsettledId() > upTo) return Promise.resolve();
    this.flushUpTo = Math.max(this.flushUpTo, upTo);
    const flushed = new Promise<void>((resolve) => this.flushWaiters.push({ upTo, resolve }));
    this.kick();
    return flushed;
  }

  /**
   * Refuses new writes, sends what is queued for up to `graceMs`, then rejects the write() calls still
   * unwritten with InfluxWriterClosedError and logs them. Idempotent.
   */
  close(graceMs = this.closeGraceMs): Promise<CloseResult> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<CloseResult> {
    this.state = 'closing';
    this.wakeWaiters();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.flush().then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    const unwrittenLines = timedOut ? this.pending : 0;
    if (unwrittenLines > 0) {
      const writes = this.unsettled.size;
      this.logger?.error(
        { unwrittenLines, writes, graceMs },
        'InfluxDB writer closed with lines InfluxDB has not accepted; their messages stay unacknowledged',
      );
      this.abort(
        new InfluxWriterClosedError(
          `the InfluxDB writer closed before InfluxDB accepted these points (${unwrittenLines} lines ` +
            `in ${writes} writes were left after ${graceMs} ms)`,
        ),
      );
    }
    this.aborted = true;
    this.state = 'closed';
    this.clearFlushTimer();
    this.api.dispose();
    return { unwrittenLines };
  }

  /** Fails every unsettled write() and stops the send loop (an in-flight request is left to finish). */
  private abort(error: Error): void {
    this.aborted = true;
    this.clearFlushTimer();
    this.naps.wakeAll();
    for (const owner of [...this.unsettled]) this.fail(owner, error);
    this.queue.length = 0;
    this.head = 0;
    this.queuedLines = 0;
  }

  private oldestUnsettledId(): number {
    for (const owner of this.unsettled) return owner.id;
    return Number.POSITIVE_INFINITY;
  }

  private clearFlushTimer(): void {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  /** Wakes the send loop when the oldest queued line has waited the flush interval. */
  private armFlushTimer(): void {
    if (this.inFlight >= this.maxInFlight || this.aborted || this.flushTimer !== undefined) return;
    const head = this.peek();
    if (!head) return;
    const delay = Math.max(0, head.enqueuedAt + this.flushIntervalMs - Date.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.kick();
    }, delay);
  }

  /** Starts requests while batches are due and fewer than maxInFlight are on their way. */
  private kick(): void {
    if (this.aborted) return;
    this.clearFlushTimer();
    while (this.inFlight < this.maxInFlight && this.isDue(Date.now())) {
      this.inFlight++;
      this.send(this.takeBatch())
        .catch((err) => this.logger?.error({ err }, 'InfluxDB writer send loop failed'))
        .finally(() => {
          this.inFlight--;
          // Writes made while this request was in flight may have filled a batch already.
          if (!this.aborted) this.kick();
        });
    }
    this.armFlushTimer();
  }

  /** The first segment with lines left to send, dropping spent ones and those of settled writes. */
  private peek(): Segment | undefined {
    while (this.head < this.queue.length) {
      const segment = this.queue[this.head]!;
      if (!segment.owner.settled && segment.next < segment.lines.length) return segment;
      this.queuedLines -= segment.lines.length - segment.next;
      this.head++;
    }
    this.queue.length = 0;
    this.head = 0;
    return undefined;
  }

  private isDue(now: number): boolean {
    const head = this.peek();
    if (!head) return false;
    return (
      this.queuedLines >= this.batchLines ||
      this.state !== 'open' ||
      head.owner.id <= this.flushUpTo ||
      now - head.enqueuedAt >= this.flushIntervalMs
    );
  }

  private takeBatch(): { parts: Part[]; oldestAt: number } {
    const parts: Part[] = [];
    const oldestAt = this.peek()?.enqueuedAt ?? Date.now();
    let count = 0;
    for (let segment = this.peek(); segment && count < this.batchLines; segment = this.peek()) {
      const take = Math.min(this.batchLines - count, segment.lines.length - segment.next);
      const whole = take === segment.lines.length;
      parts.push({
        owner: segment.owner,
        lines: whole ? segment.lines : segment.lines.slice(segment.next, segment.next + take),
      });
      segment.next += take;
      this.queuedLines -= take;
      count += take;
    }
    // Keep the spent head of the queue from growing without bound.
    if (this.head > 1_024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return { parts, oldestAt };
  }

  /** Sends one batch until it is accepted, splitting it along write() calls when InfluxDB rejects it. */
  private async send(batch: { parts: Part[]; oldestAt: number }): Promise<void> {
    const work: Part[][] = [batch.parts];
    while (work.length > 0) {
      const parts = work.pop()!.filter((part) => !part.owner.settled);
      if (parts.length === 0) continue;
      const outcome = await this.post(parts, batch.oldestAt);
      if (outcome === 'aborted') return;
      if (outcome === 'ok') {
        for (const part of parts) this.accept(part);
        continue;
      }
      if (parts.length > 1) {
        this.logger?.warn(
          { statusCode: outcome.statusCode, writes: parts.length, err: outcome },
          'InfluxDB rejected a batch; re-sending it in halves to find the writes it refuses',
        );
        const middle = Math.ceil(parts.length / 2);
        work.push(parts.slice(middle), parts.slice(0, middle));
        continue;
      }
      const part = parts[0]!;
      const error = new InfluxWriteRejectedError(outcome.statusCode, outcome.message, part.lines.length, {
        cause: outcome,
      });
      this.logger?.error(
        { statusCode: error.statusCode, lines: error.lines, detail: error.detail, firstLine: part.lines[0] },
        'InfluxDB rejected the points of a write; failing it',
      );
      this.notify('writeRejected', { lines: part.lines.length, error });
      this.fail(part.owner, error);
    }
  }

  /** One request, re-sent until it is accepted, rejected for good, or the writer is aborted. */
  private async post(parts: Part[], oldestAt: number): Promise<PostOutcome> {
    // One record holding every line: the library measures, stores and joins each record it is
    // given, and these lines are final already (the request body is the same either way).
    let body = '';
    let count = 0;
    for (const part of parts) {
      body += body === '' ? part.lines.join('\n') : `\n${part.lines.join('\n')}`;
      count += part.lines.length;
    }
    for (let attempt = 1; ; attempt++) {
      if (this.aborted) return 'aborted';
      const started = performance.now();
      try {
        this.api.writeRecord(body);
        await this.api.flush();
      } catch (err) {
        if (this.aborted) return 'aborted';
        const error = err instanceof Error ? err : new Error(String(err));
        if (isRejection(error)) return error;
        // Jitter spreads out the retries of processors that lost InfluxDB at the same moment.
        const delayMs = Math.min(
          this.maxRetryDelayMs,
          Math.max(
            backoffMs(attempt - 1, this.minRetryDelayMs, this.maxRetryDelayMs, true),
            retryAfterMs(error),
          ),
        );
        this.notify('retry', { lines: count, attempt, delayMs, error });
        if (attempt === 1 || attempt % 10 === 0) {
          this.logger?.warn(
            {
              err: error,
              attempt,
              lines: count,
              pendingLines: this.pending,
              delayMs: Math.round(delayMs),
            },
            'InfluxDB write failed; retrying',
          );
        }
        await this.naps.sleep(delayMs);
        continue;
      }
      if (attempt > 1) this.logger?.info({ attempts: attempt, lines: count }, 'InfluxDB write recovered');
      this.notify('batchWritten', {
        lines: count,
        requestMs: performance.now() - started,
        waitMs: Date.now() - oldestAt,
        attempts: attempt,
      });
      return 'ok';
    }
  }

  private accept(part: Part): void {
    const owner = part.owner;
    if (owner.settled) return;
    owner.remaining -= part.lines.length;
    this.pending -= part.lines.length;
    if (owner.remaining === 0) {
      owner.settled = true;
      this.unsettled.delete(owner);
      owner.resolve();
    }
    this.wakeWaiters();
  }

  private fail(owner: Owner, error: Error): void {
    if (owner.settled) return;
    this.pending -= owner.remaining;
    owner.remaining = 0;
    owner.settled = true;
    this.unsettled.delete(owner);
    owner.reject(error);
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    if (this.flushWaiters.length > 0) {
      const oldest = this.oldestUnsettledId();
      const ready = this.flushWaiters.filter((w) => w.upTo < oldest);
      if (ready.length > 0) {
        this.flushWaiters = this.flushWaiters.filter((w) => w.upTo >= oldest);
        for (const waiter of ready) waiter.resolve();
      }
    }
    if (this.capacityWaiters.length > 0 && (this.state !== 'open' || !this.overloaded)) {
      const waiters = this.capacityWaiters;
      this.capacityWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private notify<K extends keyof InfluxWriterObserver>(
    hook: K,
    event: Parameters<NonNullable<InfluxWriterObserver[K]>>[0],
  ): void {
    try {
      (this.observer[hook] as ((e: typeof event) => void) | undefined)?.(event);
    } catch (err) {
      this.logger?.error({ err, hook }, 'InfluxDB writer observer threw');
    }
  }
}
