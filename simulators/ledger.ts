import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import type { OutMessage } from './device-script.js';
import { LedgerInvalidError } from './errors.js';

/**
 * The ledger: what a run sent and what the gateway acknowledged, per device and per 10 s window of
 * event time (aligned to the epoch, as the processors' windows are), in canonical units. `verify`
 * compares it with the TSDB.
 *
 * JSON Lines, one object per line, in this order:
 *   {"type":"header", format, version, runId, tenant, seed, qos, promised, windowMs, …}
 *   {"type":"device", device, deviceType, labels, sent, acked, readings, invalid, …}   one per device
 *   {"type":"window", device, metric, start, count, sum, min, max}                    one per device,
 *                                                                                     metric, window
 *   {"type":"totals", sent, acked, unacked, readings, invalidSent, invalidAcked, …}    last
 *
 * Only acknowledged readings are in the windows (QoS 1 and 2: PUBACK / PUBCOMP received; the gateway
 * sends it only once the event is stored). At QoS 0 nothing is acknowledged: the windows then hold
 * what was written to the socket and `promised` is false, so `verify` reports without failing.
 * A duplicate (same seq and ts, sent again) is one reading; an invalid payload is none: it is counted
 * by the reason code the gateway must give it, and `verify` looks for it in DEADLETTER.
 */
export const LEDGER_FORMAT = 'iot-sim-ledger';
export const LEDGER_VERSION = 1;
export const LEDGER_WINDOW_MS = 10_000;

export interface WindowStats {
  count: number;
  sum: number;
  min: number;
  max: number;
}

const Counts = z.record(z.string(), z.int().nonnegative());

export const LedgerHeader = z.object({
  type: z.literal('header'),
  format: z.literal(LEDGER_FORMAT),
  version: z.literal(LEDGER_VERSION),
  runId: z.string(),
  tenant: z.string(),
  /** Every device id starts with this (the run id plus `-`): how `verify` tells the run's devices apart. */
  devicePrefix: z.string(),
  seed: z.int(),
  auth: z.enum(['registry', 'open']),
  qos: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  promised: z.boolean(),
  windowMs: z.int().positive(),
  startedAt: z.iso.datetime(),
  endedAt: z.iso.datetime(),
  /** Event time of the earliest and latest acknowledged reading; null when there was none. */
  firstTs: z.number().nullable(),
  lastTs: z.number().nullable(),
  metrics: z.array(z.string()),
  options: z.record(z.string(), z.unknown()),
});
export type LedgerHeader = z.infer<typeof LedgerHeader>;

export const LedgerDevice = z.object({
  type: z.literal('device'),
  device: z.string(),
  deviceType: z.string(),
  labels: z.record(z.string(), z.string()),
  /** Publishes sent (first attempts) and acknowledged, of every kind. */
  sent: z.int().nonnegative(),
  acked: z.int().nonnegative(),
  /** Readings acknowledged (each reading once, however often it was sent). */
  readings: z.int().nonnegative(),
  /** Acknowledged invalid publishes by the reason code the gateway must give them. */
  invalid: Counts,
  duplicates: z.int().nonnegative(),
  late: z.int().nonnegative(),
  outOfOrder: z.int().nonnegative(),
  fahrenheit: z.int().nonnegative(),
  /** Planned unclean disconnects (churn) followed by a reconnect. */
  reconnects: z.int().nonnegative(),
  /** Connections lost without being asked to (the gateway closed them, or the network). */
  lost: z.int().nonnegative(),
  unacked: z.int().nonnegative(),
  /** Event time of the first sample an offline device did not take; null if it never went silent. */
  silentFrom: z.number().nullable(),
});
export type LedgerDevice = z.infer<typeof LedgerDevice>;

export const LedgerWindow = z.object({
  type: z.literal('window'),
  device: z.string(),
  metric: z.string(),
  start: z.int(),
  count: z.int().positive(),
  sum: z.number(),
  min: z.number(),
  max: z.number(),
});
export type LedgerWindow = z.infer<typeof LedgerWindow>;

export const LedgerTotals = z.object({
  type: z.literal('totals'),
  devices: z.int().nonnegative(),
  sent: z.int().nonnegative(),
  acked: z.int().nonnegative(),
  /** Publishes still unacknowledged when the run ended: they may or may not have been stored. */
  unacked: z.int().nonnegative(),
  /** Unacknowledged readings (in unacked publishes): a TSDB may hold them though the windows do not. */
  unackedReadings: z.int().nonnegative(),
  readings: z.int().nonnegative(),
  invalidSent: Counts,
  invalidAcked: Counts,
  duplicatesSent: z.int().nonnegative(),
  duplicatesAcked: z.int().nonnegative(),
  late: z.int().nonnegative(),
  outOfOrder: z.int().nonnegative(),
  fahrenheit: z.int().nonnegative(),
  /** Acknowledged publishes sent as CBOR (`--encoding`); ledgers from before it have none. */
  cborAcked: z.int().nonnegative().default(0),
  churnReconnects: z.int().nonnegative(),
  lostConnections: z.int().nonnegative(),
  /** Sends repeated after a connection was lost (same payload; the gateway deduplicates them). */
  retransmissions: z.int().nonnegative(),
  offlineDevices: z.int().nonnegative(),
  /** Samples a device dropped because its send buffer was full while it could not connect. */
  dropped: z.int().nonnegative(),
});
export type LedgerTotals = z.infer<typeof LedgerTotals>;

const LedgerLine = z.discriminatedUnion('type', [LedgerHeader, LedgerDevice, LedgerWindow, LedgerTotals]);

export interface Ledger {
  header: LedgerHeader;
  devices: LedgerDevice[];
  windows: LedgerWindow[];
  totals: LedgerTotals;
}

export function windowStart(ts: number, windowMs: number): number {
  return Math.floor(ts / windowMs) * windowMs;
}

type DeviceTally = Omit<LedgerDevice, 'type'>;

function increment(counts: Record<string, number>, key: string, by = 1): void {
  counts[key] = (counts[key] ?? 0) + by;
}

/** Accumulates a run as it goes; `ledger()` gives the complete ledger at the end. */
export class LedgerBook {
  private readonly tallies = new Map<string, DeviceTally>();
  /** device → metric → window start → stats */
  private readonly stats = new Map<string, Map<string, Map<number, WindowStats>>>();
  private readonly metrics = new Set<string>();
  private firstTs: number | undefined;
  private lastTs: number | undefined;
  readonly invalidSent: Record<string, number> = {};
  duplicatesSent = 0;
  retransmissions = 0;
  dropped = 0;
  /** Acknowledged publishes that went as CBOR. */
  private cborAcked = 0;

  constructor(readonly windowMs = LEDGER_WINDOW_MS) {}

  addDevice(device: string, deviceType: string, labels: Record<string, string>): void {
    this.tallies.set(device, {
      device,
      deviceType,
      labels,
      sent: 0,
      acked: 0,
      readings: 0,
      invalid: {},
      duplicates: 0,
      late: 0,
      outOfOrder: 0,
      fahrenheit: 0,
      reconnects: 0,
      lost: 0,
      unacked: 0,
      silentFrom: null,
    });
  }

  private tally(device: string): DeviceTally {
    const t = this.tallies.get(device);
    if (t === undefined) throw new Error(`ledger: unknown device ${device}`);
    return t;
  }

  /** A publish sent for the first time. */
  sent(device: string, msg: OutMessage): void {
    this.tally(device).sent++;
    if (msg.kind === 'invalid' && msg.reason !== undefined) increment(this.invalidSent, msg.reason);
    if (msg.kind === 'duplicate') this.duplicatesSent++;
  }

  /** A publish acknowledged (or, at QoS 0, written): its readings enter their windows. */
  acked(device: string, msg: OutMessage): void {
    const t = this.tally(device);
    t.acked++;
    if (msg.encoding === 'cbor') this.cborAcked++;
    switch (msg.kind) {
      case 'invalid':
        if (msg.reason !== undefined) increment(t.invalid, msg.reason);
        return;
      case 'duplicate':
        t.duplicates++;
        return;
      case 'late':
        t.late += msg.readings.length;
        break;
      case 'data':
        if (msg.swapped) t.outOfOrder++;
        break;
    }
    let byMetric = this.stats.get(device);
    if (byMetric === undefined) {
      byMetric = new Map();
      this.stats.set(device, byMetric);
    }
    for (const reading of msg.readings) {
      t.readings++;
      if (reading.fahrenheit) t.fahrenheit++;
      if (this.firstTs === undefined || reading.ts < this.firstTs) this.firstTs = reading.ts;
      if (this.lastTs === undefined || reading.ts > this.lastTs) this.lastTs = reading.ts;
      const start = windowStart(reading.ts, this.windowMs);
      for (const [metric, value] of reading.canonical) {
        this.metrics.add(metric);
        let byStart = byMetric.get(metric);
        if (byStart === undefined) {
          byStart = new Map();
          byMetric.set(metric, byStart);
        }
        const s = byStart.get(start);
        if (s === undefined) byStart.set(start, { count: 1, sum: value, min: value, max: value });
        else {
          s.count++;
          s.sum += value;
          if (value < s.min) s.min = value;
          if (value > s.max) s.max = value;
        }
      }
    }
  }

  reconnected(device: string, planned: boolean): void {
    if (planned) this.tally(device).reconnects++;
    else this.tally(device).lost++;
  }

  unacked(device: string, count: number): void {
    this.tally(device).unacked += count;
  }

  silentFrom(device: string, ts: number): void {
    this.tally(device).silentFrom = ts;
  }

  ledger(
    header: Omit<LedgerHeader, 'type' | 'format' | 'version' | 'firstTs' | 'lastTs' | 'metrics' | 'windowMs'>,
    unackedReadings: number,
  ): Ledger {
    const devices = [...this.tallies.values()]
      .sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : 0))
      .map((t): LedgerDevice => ({ type: 'device', ...t }));
    const windows: LedgerWindow[] = [];
    for (const d of devices) {
      const byMetric = this.stats.get(d.device);
      if (byMetric === undefined) continue;
      for (const metric of [...byMetric.keys()].sort()) {
        const byStart = byMetric.get(metric)!;
        for (const start of [...byStart.keys()].sort((a, b) => a - b)) {
          windows.push({ type: 'window', device: d.device, metric, start, ...byStart.get(start)! });
        }
      }
    }
    const sum = (f: (d: LedgerDevice) => number) => devices.reduce((n, d) => n + f(d), 0);
    const invalidAcked: Record<string, number> = {};
    for (const d of devices) for (const [k, v] of Object.entries(d.invalid)) increment(invalidAcked, k, v);
    return {
      header: {
        type: 'header',
        format: LEDGER_FORMAT,
        version: LEDGER_VERSION,
        ...header,
        windowMs: this.windowMs,
        firstTs: this.firstTs ?? null,
        lastTs: this.lastTs ?? null,
        metrics: [...this.metrics].sort(),
      },
      devices,
      windows,
      totals: {
        type: 'totals',
        devices: devices.length,
        sent: sum((d) => d.sent),
        acked: sum((d) => d.acked),
        unacked: sum((d) => d.unacked),
        unackedReadings,
        readings: sum((d) => d.readings),
        invalidSent: { ...this.invalidSent },
        invalidAcked,
        duplicatesSent: this.duplicatesSent,
        duplicatesAcked: sum((d) => d.duplicates),
        late: sum((d) => d.late),
        outOfOrder: sum((d) => d.outOfOrder),
        fahrenheit: sum((d) => d.fahrenheit),
        cborAcked: this.cborAcked,
        churnReconnects: sum((d) => d.reconnects),
        lostConnections: sum((d) => d.lost),
        retransmissions: this.retransmissions,
        offlineDevices: devices.filter((d) => d.silentFrom !== null).length,
        dropped: this.dropped,
      },
    };
  }
}

/** Writes the ledger next to `path` and renames it into place, so a reader never sees half of one. */
export async function writeLedger(path: string, ledger: Ledger): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const out = createWriteStream(tmp, { encoding: 'utf8' });
  const closed = once(out, 'close');
  try {
    const lines: object[][] = [[ledger.header], ledger.devices, ledger.windows, [ledger.totals]];
    for (const group of lines) {
      for (const line of group) {
        if (!out.write(`${JSON.stringify(line)}\n`)) await once(out, 'drain');
      }
    }
    out.end();
    await closed;
    await rename(tmp, path);
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    throw err;
  }
}

const MAX_REPORTED_PROBLEMS = 20;

export async function readLedger(path: string): Promise<Ledger> {
  const problems: string[] = [];
  let header: LedgerHeader | undefined;
  let totals: LedgerTotals | undefined;
  const devices: LedgerDevice[] = [];
  const windows: LedgerWindow[] = [];
  const input = createReadStream(path, { encoding: 'utf8' });
  let lineNo = 0;
  try {
    for await (const text of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
      lineNo++;
      if (text.trim() === '') continue;
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        problems.push(`line ${lineNo}: not JSON`);
        continue;
      }
      const parsed = LedgerLine.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        problems.push(`line ${lineNo}: ${issue.path.join('.') || '(line)'}: ${issue.message}`);
        continue;
      }
      const line = parsed.data;
      if (lineNo === 1 && line.type !== 'header')
        problems.push('line 1: the ledger must start with its header');
      switch (line.type) {
        case 'header':
          if (header !== undefined) problems.push(`line ${lineNo}: a second header`);
          header = line;
          break;
        case 'device':
          devices.push(line);
          break;
        case 'window':
          windows.push(line);
          break;
        case 'totals':
          totals = line;
          break;
      }
      if (problems.length >= MAX_REPORTED_PROBLEMS) break;
    }
  } catch (err) {
    throw new LedgerInvalidError(path, [`cannot read: ${(err as Error).message}`], { cause: err });
  } finally {
    input.destroy();
  }
  if (header === undefined && problems.length === 0) problems.push('no header line');
  if (totals === undefined && problems.length === 0)
    problems.push('no totals line: the run did not finish writing it');
  if (problems.length > 0 || header === undefined || totals === undefined)
    throw new LedgerInvalidError(path, problems);
  return { header, devices, windows, totals };
}
