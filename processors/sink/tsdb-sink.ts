import { type CloseResult, InfluxWriter, type InfluxWriterOptions } from './influx-writer.js';

/** Requests in flight for raw telemetry: enough to hide a round trip behind the next batch. */
export const RAW_MAX_IN_FLIGHT = 3;
/**
 * Window results are what dashboards wait for: a closed window goes out within this, not the raw
 * lines' full flush interval. Under load their batches fill up long before.
 */
export const ORDERED_FLUSH_INTERVAL_MS = 200;

/**
 * The processors' two InfluxDB writers, one sink to the rest. Raw telemetry lines are each written
 * once (or again with the same values on a replay), so their requests may overlap. Window, fleet,
 * alert and status lines are rewritten with new values under the same series and time, so they go
 * through a writer with one request in flight that keeps their order.
 */
export class TsdbSink {
  readonly raw: InfluxWriter;
  readonly ordered: InfluxWriter;

  constructor(options: Omit<InfluxWriterOptions, 'maxInFlight'>, rawMaxInFlight = RAW_MAX_IN_FLIGHT) {
    this.raw = new InfluxWriter({ ...options, maxInFlight: rawMaxInFlight });
    this.ordered = new InfluxWriter({
      ...options,
      maxInFlight: 1,
      flushIntervalMs: Math.min(
        options.flushIntervalMs ?? ORDERED_FLUSH_INTERVAL_MS,
        ORDERED_FLUSH_INTERVAL_MS,
      ),
    });
  }

  get pendingLines(): number {
    return this.raw.pendingLines + this.ordered.pendingLines;
  }

  /** Either writer holds more than it should: stop pulling. */
  get overloaded(): boolean {
    return this.raw.overloaded || this.ordered.overloaded;
  }

  async whenAccepting(): Promise<void> {
    await Promise.all([this.raw.whenAccepting(), this.ordered.whenAccepting()]);
  }

  async close(graceMs?: number): Promise<CloseResult> {
    const [raw, ordered] = await Promise.all([this.raw.close(graceMs), this.ordered.close(graceMs)]);
    return { unwrittenLines: raw.unwrittenLines + ordered.unwrittenLines };
  }
}
