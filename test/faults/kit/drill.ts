import { join } from 'node:path';
import { expect } from 'vitest';
import type { CanonicalEvent } from '../../../contract/index.js';
import { TELEMETRY_STREAM } from '../../../contract/index.js';
import {
  type Ledger,
  type RunResult,
  runSimulation,
  type VerifyResult,
  verifyLedger,
} from '../../../simulators/index.js';
import { windowStart } from '../../../simulators/ledger.js';
import { RunStats } from '../../../simulators/progress.js';
import { natsClient } from '../../kit/gateway.js';
import { readStream } from '../../kit/streams.js';
import { type DrillResult, formatDrill, printDrill } from '../report.js';
import type { Pipeline } from './pipeline.js';

/**
 * A drill's run and its accounting. The simulator (in this process) drives a modest fleet at QoS 1
 * with a ledger; `fault` runs once publishing has started, concurrently with the run, and the run's
 * result is measured only once both are over: TELEMETRY read back against the ledger (`stored`),
 * then `verifyLedger` against the TSDB and DEADLETTER (`aggregated`).
 */
export interface DrillRun {
  name: string;
  pipeline: Pipeline;
  /** Breaks something and repairs it; called as publishing starts. */
  fault: () => Promise<void>;
  seed: number;
  devices?: number;
  /** Publishes per second per device. */
  rate?: number;
  duration?: string;
  /** Percent of publishes the simulator sends twice on purpose (default 3). */
  duplicates?: number;
  /** The run's counters, to watch acknowledgements while the fault lasts. */
  stats?: RunStats;
}

export interface DrillOutcome {
  result: DrillResult;
  run: RunResult;
  verified: VerifyResult;
  /** The stream's side of the accounting, for a failed drill's message. */
  stream: StreamTally;
}

/** Generous: a drill's last windows close only after the processors' IDLE_TIMEOUT. */
const VERIFY_WAIT_MS = 120_000;

export async function runDrill(d: DrillRun): Promise<DrillOutcome> {
  const ledger = join(d.pipeline.dir, `${d.name}.jsonl`);
  let faulted: Promise<void> | undefined;
  const run = await runSimulation(
    {
      url: d.pipeline.mqttUrl,
      nats: d.pipeline.nats.url,
      devices: d.devices ?? 60,
      rate: d.rate ?? 2,
      batch: 1,
      duration: d.duration ?? '25s',
      qos: 1,
      seed: d.seed,
      schema: 'mixed',
      // Faults that keep the ledger exact and exercise deduplication and reordering on the way.
      duplicates: d.duplicates ?? 3,
      outOfOrder: 3,
      fahrenheit: 10,
      ledger,
      // Long enough for the acknowledgements held during an outage to come in after it.
      drainTimeout: '60s',
      progress: 'none',
    },
    {
      stats: d.stats ?? new RunStats(),
      onSending: () => {
        faulted = d.fault();
        // Not unhandled while the run goes on; awaited (and so thrown) below.
        faulted.catch(() => {});
      },
    },
  );
  await faulted;
  const stream = await tallyStream(d.pipeline.nats.url, run.ledger);
  const verified = await verifyLedger({
    ledger,
    wait: VERIFY_WAIT_MS,
    nats: d.pipeline.nats.url,
    influxUrl: d.pipeline.tsdb.url,
    rows: 30,
  });
  return { result: account(d.name, run.ledger, stream, verified), run, verified, stream };
}

const SEP = '\u0000';
const keyOf = (device: string, start: number) => `${device}${SEP}${start}`;

/** Per device and 10 s window of event time: readings in TELEMETRY, distinct (by seq) and in all. */
export interface StreamTally {
  distinct: Map<string, number>;
  copies: Map<string, number>;
  events: number;
}

/** Every device's seq is unique within a run (sample k has seq k), so (device, seq) names a reading. */
async function tallyStream(natsUrl: string, ledger: Ledger): Promise<StreamTally> {
  const nc = await natsClient(natsUrl);
  try {
    // No subject filter: filter_subjects needs nats-server 2.10, and Debian's is 2.9.
    const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.subject.split('.')[2] === ledger.header.tenant,
    );
    const seen = new Set<string>();
    const distinct = new Map<string, number>();
    const copies = new Map<string, number>();
    for (const e of events) {
      const key = keyOf(e.data.deviceId, windowStart(Date.parse(e.data.ts), ledger.header.windowMs));
      copies.set(key, (copies.get(key) ?? 0) + 1);
      const reading = `${e.data.deviceId}${SEP}${e.data.seq}`;
      if (seen.has(reading)) continue;
      seen.add(reading);
      distinct.set(key, (distinct.get(key) ?? 0) + 1);
    }
    return { distinct, copies, events: events.length };
  } finally {
    await nc.close();
  }
}

/**
 * Readings, not values: each of a device's readings carries every metric of its type, so a device
 * window holds as many readings as each of its metrics has values.
 * - sent: first sends of publishes that carry a reading (batch 1: one each), so neither the
 *   deliberate duplicates nor retransmissions.
 * - acked: readings in the ledger (acknowledged).
 * - stored: acknowledged readings in TELEMETRY, per device window at most what the ledger says.
 * - aggregated: the same in the 10 s aggregates, as verify saw them; a reading counts once every one
 *   of its metrics is in (per device window, the smallest count over its metrics).
 * - lost: per device window, acknowledged readings missing from the stream or the aggregates.
 * - duplicated: extra copies of a reading in the stream, and readings in the stream or the
 *   aggregates beyond the acknowledged ones (nothing is left unacknowledged, so that can only be
 *   double counting), including device windows the ledger does not have.
 */
export function account(
  drill: string,
  ledger: Ledger,
  stream: StreamTally,
  verified: VerifyResult,
): DrillResult {
  const t = ledger.totals;
  const invalidSent = Object.values(t.invalidSent).reduce((a, b) => a + b, 0);
  // Per device window and metric: what the ledger expects, and what the aggregates hold (the
  // ledger's count unless verify found otherwise).
  const expected = new Map<string, Map<string, number>>();
  for (const w of ledger.windows) {
    const key = keyOf(w.device, w.start);
    const byMetric = expected.get(key) ?? new Map<string, number>();
    byMetric.set(w.metric, w.count);
    expected.set(key, byMetric);
  }
  const inAggregates = new Map([...expected].map(([key, byMetric]) => [key, new Map(byMetric)]));
  let duplicated = 0;
  for (const diff of verified.report.differences) {
    if (diff.source !== 'agg' || diff.device === undefined) continue;
    const device = diff.device;
    if (diff.kind === 'missing-device') {
      for (const [key, byMetric] of inAggregates)
        if (key.startsWith(`${device}${SEP}`)) for (const m of byMetric.keys()) byMetric.set(m, 0);
    } else if (diff.kind === 'extra-device') {
      // Its windows are not listed one by one: count at least one reading.
      duplicated += 1;
    } else if (diff.at !== undefined && diff.metric !== undefined) {
      const key = keyOf(device, diff.at);
      const found = Number(diff.found);
      if (diff.kind === 'extra-window') {
        const byMetric = inAggregates.get(key) ?? new Map<string, number>();
        byMetric.set(diff.metric, found);
        inAggregates.set(key, byMetric);
      } else if (diff.kind === 'missing-window') inAggregates.get(key)?.set(diff.metric, 0);
      else if (diff.kind === 'count') inAggregates.get(key)?.set(diff.metric, found);
    }
  }

  let stored = 0;
  let aggregated = 0;
  let lost = 0;
  const keys = new Set([...expected.keys(), ...inAggregates.keys(), ...stream.distinct.keys()]);
  for (const key of keys) {
    const want = Math.max(0, ...(expected.get(key)?.values() ?? []));
    const found = [...(inAggregates.get(key)?.values() ?? [])];
    const aggMin = found.length === 0 ? 0 : Math.min(...found);
    const aggMax = Math.max(0, ...found);
    const inStream = stream.distinct.get(key) ?? 0;
    stored += Math.min(inStream, want);
    aggregated += Math.min(aggMin, want);
    lost += want - Math.min(inStream, aggMin, want);
    duplicated += Math.max(0, inStream - want) + Math.max(0, aggMax - want);
    duplicated += (stream.copies.get(key) ?? 0) - inStream;
  }
  return {
    drill,
    sent: t.sent - t.duplicatesSent - invalidSent,
    acked: t.readings,
    stored,
    aggregated,
    lost,
    duplicated,
  };
}

/**
 * What every drill ends with: its line printed, then nothing lost, nothing double counted, the
 * ledger verified exact against the TSDB and DEADLETTER, and nothing left unacknowledged (an
 * unacknowledged publish is not promised, so a drill that left some would prove less).
 */
export function expectExact(outcome: DrillOutcome, pipeline: Pipeline): void {
  const { result, run, verified } = outcome;
  printDrill(result);
  const why = () =>
    `${formatDrill(result)}\n${run.report}\n${verified.text}\n${pipeline.diagnostics()}`.slice(-20_000);
  expect(run.ledger.totals.unacked, why()).toBe(0);
  expect(result.acked, why()).toBeGreaterThan(0);
  expect(result.lost, why()).toBe(0);
  expect(result.duplicated, why()).toBe(0);
  expect(result.stored, why()).toBe(result.acked);
  expect(result.aggregated, why()).toBe(result.acked);
  expect(verified.exitCode, why()).toBe(0);
  expect(verified.report.exact, why()).toBe(true);
}
