import type { AlertTransition } from '../contract/alerts.js';
import type { DecodedEvent } from '../contract/decode-canonical-event.js';
import type { CanonicalEvent } from '../contract/event.js';
import { AlertEngine, type AlertEngineOptions } from './alerts/alert-engine.js';
import type { AlertRule } from './alerts/alert-rules.js';
import { DEFAULT_CHECKPOINT_MAX_BYTES } from './config.js';
import { fitCheckpoint, type SavedCheckpoint } from './consume/checkpoint-fit.js';
import type { LimitReached } from './metrics.js';
import { aggregateLine, alertLine, telemetryLine } from './sink/lines.js';
import type { AddOutcome, WindowResult } from './windows/device-windows.js';
import { type PartitionWindowSettings, PartitionWindows } from './windows/partition-windows.js';

/**
 * Everything one telemetry partition computes, with no I/O and no clock of its own: events in;
 * raw lines, window results, derived lines (aggregates, alerts) and alert transitions out; one
 * checkpoint that restores it. Every time it sees is the `nowMs` its caller passes, one clock for
 * windows and alerts alike: the consumer passes wall time that stands still while the partition
 * is paused for a full TSDB, so neither a window's idle timeout nor an absence or `for` rule can
 * come due because we stopped reading, only because the device stopped sending.
 *
 * The consumer (consume/partition-consumer.ts) is transport only (pull, pause, checkpoint, ack);
 * the effects (effects.ts) are I/O only (write the lines, publish the windows and alerts).
 */
export interface PartitionBatch {
  /** One `telemetry` line per event that has metrics. */
  raw: string[];
  /** Events the raw lines come from (for counting what was written or refused). */
  events: number;
  /** Window aggregates and alert transitions, as lines. */
  derived: string[];
  /** Window results, for the fleet rollup (WINDOWS). */
  windows: WindowResult[];
  /** Alert transitions, for `alertsSubject`. */
  alerts: AlertTransition[];
}

export interface PartitionPipelineOptions {
  windows: PartitionWindowSettings;
  /** Alert rules; none when empty or left out. */
  rules?: readonly AlertRule[];
  alertOptions?: Omit<AlertEngineOptions, 'onLimit'>;
  /** CHECKPOINT_MAX_BYTES. */
  checkpointMaxBytes?: number;
  onLimit?: LimitReached;
  /** An event that cannot be a line (checked by the gateway, so a bug there): skipped and counted. */
  onInvalid?: (event: CanonicalEvent, err: unknown) => void;
}

export class PartitionPipeline {
  private readonly windows: PartitionWindows;
  private readonly alerts: AlertEngine | undefined;
  private raw: string[] = [];
  private events = 0;
  private transitions: AlertTransition[] = [];

  /** `restored`: the checkpoint to go on from, taken at `nowMs` on this pipeline's clock. */
  constructor(
    private readonly o: PartitionPipelineOptions,
    restored: SavedCheckpoint | undefined,
    nowMs: number,
  ) {
    this.windows = new PartitionWindows(o.windows, restored, o.onLimit);
    this.alerts =
      o.rules && o.rules.length > 0
        ? new AlertEngine(o.rules, { ...o.alertOptions, onLimit: o.onLimit })
        : undefined;
    if (restored?.firing && this.alerts)
      this.alerts.restoreFiring(
        restored.firing.map((a) => ({ message: '', ...a })),
        nowMs,
      );
  }

  /**
   * Takes one event (stream sequence `seq`) at `nowMs`; its outputs wait for the next `take`. A
   * decoded event (contract/decode-canonical-event.ts) is used as it is, its `ts` parsed once; any
   * other gets its `tsMs` here.
   */
  add(event: CanonicalEvent & { tsMs?: number }, seq: number, nowMs: number): AddOutcome {
    const decoded: DecodedEvent =
      event.tsMs === undefined ? { ...event, tsMs: Date.parse(event.ts) } : (event as DecodedEvent);
    try {
      const line = telemetryLine(decoded);
      if (line !== undefined) this.raw.push(line);
    } catch (err) {
      this.o.onInvalid?.(decoded, err);
    }
    this.events++;
    if (this.alerts) for (const t of this.alerts.onEvent(decoded, nowMs)) this.transitions.push(t);
    return this.windows.add(decoded, seq, nowMs);
  }

  /**
   * What is due at `nowMs` since the last take. With `touchedOnly`, only windows of devices with new
   * readings (the only ones that can come due on event time, cheap after every pull); without, also
   * windows and alerts due on time alone (quiet devices), which visits every device of the partition.
   */
  take(nowMs: number, touchedOnly: boolean): PartitionBatch {
    const windows = this.windows.collect(nowMs, touchedOnly);
    if (!touchedOnly && this.alerts) for (const t of this.alerts.tick(nowMs)) this.transitions.push(t);
    const derived: string[] = [];
    for (const r of windows) derived.push(aggregateLine(r));
    for (const t of this.transitions) derived.push(alertLine(t));
    const batch: PartitionBatch = {
      raw: this.raw,
      events: this.events,
      derived,
      windows,
      alerts: this.transitions,
    };
    this.raw = [];
    this.events = 0;
    this.transitions = [];
    return batch;
  }

  /** The replay from the restored checkpoint has caught up with the stream. */
  replayCaughtUp(): void {
    this.windows.replayCaughtUp();
  }

  /**
   * The checkpoint as it stands (windows' watermarks and the alerts firing), fitted into
   * CHECKPOINT_MAX_BYTES; `checkpoint` is undefined when it cannot be. Opaque to the consumer but
   * for `ackSeq`, the stream sequence it may acknowledge once what was taken so far is durable.
   */
  checkpoint() {
    return fitCheckpoint(
      this.windows.checkpointPlan(),
      this.alerts?.active() ?? [],
      this.o.checkpointMaxBytes ?? DEFAULT_CHECKPOINT_MAX_BYTES,
    );
  }
}
