import { encode as encodeCbor } from 'cbor-x';
import type { PayloadEncoding } from '../contract/topics.js';
import {
  type EncodedReading,
  encodeReading,
  FAHRENHEIT_UNITS,
  INVALID_REASONS,
  type InvalidReason,
  invalidPayload,
  payloadOf,
  type SimReading,
} from './payloads.js';
import { createSignalModel, type DeviceType, Rng, type SignalModel } from './signals.js';

/**
 * What one simulated device sends, publish by publish: its samples, and the faults the run asked
 * for. Pure and deterministic: every decision comes from random streams named by the seed and the
 * device's index, and every time from the run's start plus the device's schedule, so the same seed
 * gives the same messages whatever the network does. fleet.ts does the sending.
 *
 * Faults are chosen so that what the gateway and the processors store stays predictable:
 * - late: a reading is held back and published on its own once the device's newest reading is
 *   1–4 s ahead of it, inside the processors' default 5 s allowed lateness, so it still counts.
 * - out of order: a publish is sent after the next one (adjacent publishes swapped).
 * - duplicates: a publish is sent again, byte for byte, once acknowledged; the gateway deduplicates
 *   it by seq + ts.
 * - invalid: an extra publish that the gateway must dead-letter with a known reason.
 * - fahrenheit: the temperature is sent in °F (payload version 2, with its unit).
 * - churn: the connection is dropped uncleanly after a publish (the will is published) and comes
 *   back after a short downtime; samples taken meanwhile are sent on reconnect.
 * - offline: the device stops sampling part-way through and stays silent.
 * - overheat: a thermometer's temperature runs OVERHEAT_DEGREES hot for OVERHEAT_MS, every
 *   EPISODE_EVERY_MS, the first time 20–90 s into the run (a threshold rule has something to fire on).
 * - naps: the device takes no samples for NAP_MS, every EPISODE_EVERY_MS, the first time 20–90 s into
 *   the run (an absence rule has something to fire on, and resolves when it is back). Chosen evenly
 *   over the fleet, so that even a small one has ⌊devices × P / 100⌋ of them.
 */
export interface FaultMix {
  /** Percent of publishes followed by an invalid one. */
  invalid: number;
  /** Percent of data publishes sent twice. */
  duplicates: number;
  /** Percent of readings held back 1–4 s. */
  late: number;
  /** Percent of publishes swapped with the next. */
  outOfOrder: number;
  /** Percent of temperature readings sent in °F. */
  fahrenheit: number;
  /** Percent of devices dropping their connection uncleanly, per minute. */
  churn: number;
  /** Percent of devices going silent part-way. */
  offline: number;
  /** Percent of thermometers overheating now and then. */
  overheat: number;
  /** Percent of devices falling silent for a while now and then. */
  naps: number;
}

export const NO_FAULTS: FaultMix = Object.freeze({
  invalid: 0,
  duplicates: 0,
  late: 0,
  outOfOrder: 0,
  fahrenheit: 0,
  churn: 0,
  offline: 0,
  overheat: 0,
  naps: 0,
});

export type Schema = 'v1' | 'v2' | 'mixed';
/** How payloads are encoded: JSON, CBOR (`…/telemetry/cbor`), or each publish either at random. */
export type Encoding = PayloadEncoding | 'mixed';

export interface ScriptSettings {
  seed: number;
  schema: Schema;
  /** JSON when left out. */
  encoding?: Encoding;
  /** Readings per publish. */
  batch: number;
  publishPeriodMs: number;
  /** Publishes this device makes unless it goes offline first. */
  publishes: number;
  faults: FaultMix;
  /** Time of day (seconds) at which the signals' daily cycles start. */
  startTodS: number;
}

export interface DeviceSpec {
  index: number;
  id: string;
  type: DeviceType;
}

export type OutKind = 'data' | 'late' | 'invalid' | 'duplicate';

export interface OutMessage {
  kind: OutKind;
  payload: string | Buffer;
  /** The topic it goes to: `…/telemetry` or `…/telemetry/cbor`. */
  encoding: PayloadEncoding;
  /** Readings the gateway stores from it: none for invalid messages and re-sent duplicates. */
  readings: readonly EncodedReading[];
  reason?: InvalidReason;
  /** Send it once more, identical, after it is acknowledged. */
  duplicate: boolean;
  /** Sent after the publish that followed it. */
  swapped: boolean;
}

export interface Step {
  messages: OutMessage[];
  /** Drop the connection uncleanly after these messages, and come back after downtimeMs. */
  churn?: { downtimeMs: number };
  /** No more publishes: the device finished, or went silent. */
  done: boolean;
}

/** How late a held-back reading is, at most, behind the device's newest (allowed lateness is 5 s). */
export const LATE_MAX_MS = 4_000;
export const LATE_MIN_MS = 1_000;
/** Unclean disconnects last this long before the device reconnects. */
export const CHURN_DOWNTIME_MS: readonly [number, number] = [500, 2_000];
/** Offline devices go silent somewhere in this part of their schedule. */
const OFFLINE_FROM: readonly [number, number] = [0.3, 0.7];
/** Overheating episodes and naps: the first 20–90 s into the run, then one every 5 minutes. */
const FIRST_EPISODE_MS: readonly [number, number] = [20_000, 90_000];
export const EPISODE_EVERY_MS = 5 * 60_000;
export const OVERHEAT_MS = 30_000;
export const OVERHEAT_DEGREES = 25;
export const NAP_MS = 75_000;

interface Held {
  reading: EncodedReading;
  releaseTs: number;
}

export class DeviceScript {
  private readonly model: SignalModel;
  private readonly faults: Rng;
  private readonly format: Rng;
  private readonly samplePeriodMs: number;
  /** Offset of the device's schedule within its first publish period, spreading the fleet's load. */
  readonly phaseMs: number;
  /** Publish index at which the device goes silent, if it does. */
  readonly silentFrom: number | undefined;
  private next = 0;
  private newestTs = Number.NEGATIVE_INFINITY;
  private held: Held[] = [];
  private swapHeld: OutMessage | undefined;
  private invalidCount = 0;
  private finished = false;
  /** Offset from the run's start of the first overheating episode, for a thermometer that has them. */
  private readonly overheatFromMs: number | undefined;
  /** Offset of the first nap, for a device that takes them. */
  private readonly napFromMs: number | undefined;

  constructor(
    readonly spec: DeviceSpec,
    private readonly settings: ScriptSettings,
    /** Event time of the run's start, epoch ms; set by `begin` when the fleet starts publishing. */
    private t0Ms = 0,
  ) {
    const { seed } = settings;
    this.model = createSignalModel(spec.type, new Rng(seed, 'signal', spec.index), settings.startTodS);
    this.faults = new Rng(seed, 'faults', spec.index);
    this.format = new Rng(seed, 'format', spec.index);
    this.samplePeriodMs = settings.publishPeriodMs / settings.batch;
    this.phaseMs = new Rng(seed, 'phase', spec.index).float() * settings.publishPeriodMs;
    const offline = new Rng(seed, 'offline', spec.index);
    this.silentFrom = offline.percent(settings.faults.offline)
      ? offline.int(
          Math.floor(settings.publishes * OFFLINE_FROM[0]),
          Math.floor(settings.publishes * OFFLINE_FROM[1]),
        )
      : undefined;
    const overheat = new Rng(seed, 'overheat', spec.index);
    this.overheatFromMs =
      spec.type === 'thermometer' && overheat.percent(settings.faults.overheat)
        ? overheat.int(FIRST_EPISODE_MS[0], FIRST_EPISODE_MS[1])
        : undefined;
    this.napFromMs = evenlyChosen(spec.index, settings.faults.naps)
      ? new Rng(seed, 'naps', spec.index).int(FIRST_EPISODE_MS[0], FIRST_EPISODE_MS[1])
      : undefined;
  }

  /** Fixes the event time of the run's start: sample k is taken at t0Ms + phase + k × sample period. */
  begin(t0Ms: number): void {
    this.t0Ms = t0Ms;
  }

  get done(): boolean {
    return this.finished;
  }

  /** Publishes made so far. */
  get published(): number {
    return this.next;
  }

  /** Last publish index + 1 this device will make. */
  get limit(): number {
    return Math.min(this.settings.publishes, this.silentFrom ?? Number.POSITIVE_INFINITY);
  }

  /** Event time at which the device goes silent (its first sample not taken), if it does. */
  get silentFromTs(): number | undefined {
    return this.silentFrom === undefined ? undefined : this.sampleTs(this.silentFrom * this.settings.batch);
  }

  /** Milliseconds after the run's start at which publish `p` is due: when its last sample is taken. */
  dueOffsetMs(p = this.next): number {
    return this.sampleOffsetMs((p + 1) * this.settings.batch - 1);
  }

  private sampleOffsetMs(k: number): number {
    return Math.round(this.phaseMs + k * this.samplePeriodMs);
  }

  private sampleTs(k: number): number {
    return this.t0Ms + this.sampleOffsetMs(k);
  }

  private encode(reading: SimReading): EncodedReading {
    const { schema, faults } = this.settings;
    let version: 1 | 2 = schema === 'v1' ? 1 : 2;
    if (schema === 'mixed') version = this.format.float() < 0.5 ? 1 : 2;
    const fahrenheit =
      'temperature' in reading.values && this.format.percent(faults.fahrenheit)
        ? this.format.pick(FAHRENHEIT_UNITS)
        : undefined;
    return encodeReading(reading, fahrenheit === undefined ? version : 2, fahrenheit);
  }

  private lateDelayMs(): number {
    // Released at the first publish at least this far ahead, so up to one publish period later.
    const max = Math.max(LATE_MIN_MS, LATE_MAX_MS - this.settings.publishPeriodMs);
    return this.faults.int(LATE_MIN_MS, max);
  }

  /** The messages of the next publish. Call while `!done`. */
  step(): Step {
    if (this.finished) return { messages: [], done: true };
    if (this.next >= this.limit) return { messages: this.flush(), done: true };
    const { batch, faults } = this.settings;
    const p = this.next++;
    // Asleep: no sample taken, nothing sent; what was held back waits for the next publish.
    if (inEpisode(this.dueOffsetMs(p), this.napFromMs, NAP_MS)) return { messages: [], done: false };
    const messages: OutMessage[] = [];
    const fresh: EncodedReading[] = [];
    for (let j = 0; j < batch; j++) {
      const k = p * batch + j;
      const ts = this.sampleTs(k);
      const values = this.model.sample(this.sampleOffsetMs(k) / 1000);
      if (inEpisode(this.sampleOffsetMs(k), this.overheatFromMs, OVERHEAT_MS))
        values.temperature = Math.round((values.temperature! + OVERHEAT_DEGREES) * 100) / 100;
      const reading = this.encode({ ts, seq: k, values });
      if (ts > this.newestTs) this.newestTs = ts;
      if (this.faults.percent(faults.late)) this.held.push({ reading, releaseTs: ts + this.lateDelayMs() });
      else fresh.push(reading);
    }
    const last = this.next >= this.limit;
    if (fresh.length > 0) {
      const main = this.dataMessage('data', payloadOf(fresh), fresh);
      if (this.swapHeld !== undefined) {
        messages.push(main, this.swapHeld);
        this.swapHeld = undefined;
      } else if (!last && this.faults.percent(faults.outOfOrder)) {
        this.swapHeld = { ...main, swapped: true };
      } else {
        messages.push(main);
      }
    }
    const due = this.held.filter((h) => h.releaseTs <= this.newestTs);
    if (due.length > 0) {
      this.held = this.held.filter((h) => h.releaseTs > this.newestTs);
      for (const h of due) messages.push(this.dataMessage('late', h.reading.json, [h.reading]));
    }
    if (this.faults.percent(faults.invalid)) {
      const reason = this.faults.pick(INVALID_REASONS);
      messages.push({
        kind: 'invalid',
        // Each provoked reason is one of JSON's (not JSON, not UTF-8, …): invalid payloads stay JSON.
        payload: invalidPayload(reason, this.newestTs, this.invalidCount++),
        encoding: 'json',
        readings: [],
        reason,
        duplicate: false,
        swapped: false,
      });
    }
    const churnChance = (faults.churn * this.settings.publishPeriodMs) / 60_000;
    const churn = this.faults.percent(churnChance)
      ? { downtimeMs: this.faults.int(CHURN_DOWNTIME_MS[0], CHURN_DOWNTIME_MS[1]) }
      : undefined;
    if (last) messages.push(...this.flush());
    return churn === undefined ? { messages, done: last } : { messages, churn, done: last };
  }

  /** Stops the device: whatever it still holds back, in order. */
  flush(): OutMessage[] {
    this.finished = true;
    const out: OutMessage[] = [];
    if (this.swapHeld !== undefined) out.push(this.swapHeld);
    this.swapHeld = undefined;
    for (const h of this.held.sort((a, b) => a.releaseTs - b.releaseTs)) {
      out.push(this.dataMessage('late', h.reading.json, [h.reading]));
    }
    this.held = [];
    return out;
  }

  private dataMessage(kind: 'data' | 'late', json: string, readings: EncodedReading[]): OutMessage {
    const encoding = this.settings.encoding ?? 'json';
    const cbor = encoding === 'cbor' || (encoding === 'mixed' && this.format.float() < 0.5);
    return {
      kind,
      // The same payload, re-encoded: what the gateway stores of it is the same either way.
      payload: cbor ? encodeCbor(JSON.parse(json)) : json,
      encoding: cbor ? 'cbor' : 'json',
      readings,
      duplicate: this.faults.percent(this.settings.faults.duplicates),
      swapped: false,
    };
  }
}

/** Whether `offsetMs` falls in an episode of `durationMs` starting at `firstMs`, then every EPISODE_EVERY_MS. */
function inEpisode(offsetMs: number, firstMs: number | undefined, durationMs: number): boolean {
  if (firstMs === undefined || offsetMs < firstMs) return false;
  return (offsetMs - firstMs) % EPISODE_EVERY_MS < durationMs;
}

/** Device `index` is among the ⌊n × percent / 100⌋ of n chosen evenly over the indices. */
function evenlyChosen(index: number, percent: number): boolean {
  return Math.floor(((index + 1) * percent) / 100) > Math.floor((index * percent) / 100);
}
