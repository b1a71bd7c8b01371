import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  AckPolicy,
  type ConsumerInfo,
  DeliverPolicy,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import { type NatsConnection, nanos } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { formatDuration, parseDuration } from '../common/duration.js';
import { createLogger, type Logger } from '../common/logger.js';
import { AGGREGATE_MEASUREMENT, TELEMETRY_MEASUREMENT } from '../contract/measurements.js';
import {
  TELEMETRY_PARTITIONS,
  TELEMETRY_STREAM,
  TELEMETRY_SUBJECTS,
  telemetryPartitionFilter,
} from '../contract/subjects.js';
import { DEFAULT_DEDUP_WINDOW_MS, DEFAULT_TELEMETRY_MAX_AGE_MS } from '../gateway/config.js';
import { JetStreamPublisher } from '../gateway/jetstream-publisher.js';
import { ensureStreams } from '../gateway/streams.js';
import { DEFAULT_ALLOWED_LATENESS, DEFAULT_LEASE_TTL } from '../processors/config.js';
import { consumerName } from '../processors/consume/partition-consumer.js';
import type { NatsServer } from '../test/kit/nats-server.js';
import { metricName, type Tsdb } from '../test/kit/victoria-metrics.js';
import { deviceName, encodeReading, selfCheck } from './canonical-events.js';
import { CpuSampler } from './cpu.js';
import { formatSummary, newestProfile } from './cpuprofile-top.js';
import { cleanup, hold, isInterrupted, stopOnExit } from './lifecycle.js';
import { heldNatsConnection, heldNatsServer } from './nats.js';
import { durationOption, numberOption } from './options.js';
import { LeaseWatch } from './processors-leases.js';
import {
  type ProcessorProcess,
  type Scrape,
  scrape,
  startProcessorProcess,
  waitForPartitions,
} from './processors-process.js';
import { announceInstances, resetProcessorState } from './processors-state.js';
import { median, quantile } from './stats.js';
import { heldVictoriaMetrics, victoriaMetricsVersion } from './victoria-metrics.js';

/**
 * `npm run bench:processors`: how fast one stream processor instance (and two) catches up with a
 * pre-filled TELEMETRY stream, against a plain JetStream consumer reading the same stream in the same
 * run, and how long after a 10 s window ends its aggregate is readable in the TSDB.
 *
 * Throughput. The stream is filled once with canonical events built by the gateway's own
 * normaliseReading (3 metrics, registry labels, dedup ids) and every round reads that same stream:
 * identical input for every consumer, and equally warm (it was just written, then read by each round).
 * Between processor rounds the processors' consumers and their checkpoint and lease buckets are
 * deleted, so each round starts from sequence 1, and each round gets a fresh VictoriaMetrics (no series
 * left over from earlier rounds that would make its inserts cheaper). Round order rotates so that the
 * machine's noise spreads over every configuration; medians are reported.
 *
 * A processor round is timed from its first consumed event (read from its /metrics, so node and tsx
 * start-up are left out) until every event is consumed and every point the processor made of them is
 * accepted by the TSDB. Checkpointing "everything" needs more: the last 10 s and 1 m windows of each
 * device stay open (they hold the acknowledgement back, see PartitionWindows) until, IDLE_TIMEOUT of
 * wall time after the device's last reading, its event time starts moving with the wall clock and
 * passes their end plus the allowed lateness; that moment, read from the consumers' acknowledgement
 * state on the server, is reported apart. A round whose processors stall fails on its timeout, with
 * every partition consumer's state in the error. Instances of a round are announced before they start
 * so that they split the partitions from the first event (see announceInstances()).
 */
const HELP = `usage: npm run bench:processors -- [options]
  --events N           canonical events pre-filled in TELEMETRY (default 200000)
  --devices D          devices they come from (default 2000); event i is reading i/D of device i%D
  --interval-ms MS     event-time step between a device's readings (default 2000, i.e. 200 s for 100 readings)
  --rounds R           rounds; each runs every consumer configuration once (default 3)
  --instances LIST     processor instance counts to run in each round (default 1,2)
  --idle-timeout DUR   the processors' IDLE_TIMEOUT in throughput rounds (default 5s): closes each
                       device's last windows after the replay so that checkpoints can reach the end
  --poll-ms MS         how often the bench reads the processors' /metrics (default 100)
  --timeout-seconds S  give up on one throughput round after S seconds (default 180)
  --latency-seconds S  live publishing in the latency phase; 0 skips the phase (default 40)
  --latency-devices D  devices publishing one reading per second each (default 20)
  --profile DIR        one extra, uncounted 1-instance round with --cpu-prof into DIR, summarised`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const TENANT = 'bench';
const LATENCY_TENANT = 'benchlat';
/** The processors' own fetch size (partition-consumer.ts), so the peer pulls the way they do. */
const FETCH_BATCH = 1_000;
/** One ack per this many messages: ack policy "all" acknowledges everything before it. */
const PEER_ACK_EVERY = 1_024;
/** Publishes in flight while pre-filling; PERF-NOTES measured ~65k msg/s with ~8000. */
const PREFILL_HIGH_WATER = 8_000;
const PREFILL_LOW_WATER = 4_000;
/** Pause between rounds so the previous round's leftovers (GC, store flushes) stay out of the next. */
const SETTLE_MS = 1_000;
/** Time for a processor to start and take its first event; node + tsx alone take 1–2 s here. */
const START_TIMEOUT_MS = 60_000;
/**
 * Checkpoints reach the end IDLE_TIMEOUT + (window end − last reading ≤ one reading interval) +
 * allowed lateness after the last reading, plus a checkpoint interval: this is the slack on top.
 */
const CHECKPOINT_SLACK_MS = 15_000;
const ALLOWED_LATENESS_MS = parseDuration(DEFAULT_ALLOWED_LATENESS)!;
/** The smallest of the processors' default windows (processors/config.ts DEFAULT_WINDOWS). */
const LATENCY_WINDOW_MS = 10_000;
const LATENCY_POLL_MS = 100;
/** After the last live reading: how long the aggregates of the windows it closed may take to show. */
const LATENCY_DRAIN_MS = 20_000;
const CANARY_MEASUREMENT = 'bench_canary';
/** How long an interrupted run lets a processor drain before SIGKILL. */
const INTERRUPTED_STOP_MS = 2_000;

interface Options {
  events: number;
  devices: number;
  intervalMs: number;
  rounds: number;
  instances: number[];
  idleTimeout: string;
  idleTimeoutMs: number;
  pollMs: number;
  timeoutSeconds: number;
  latencySeconds: number;
  latencyDevices: number;
  profileDir: string | undefined;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      events: { type: 'string', default: '200000' },
      devices: { type: 'string', default: '2000' },
      'interval-ms': { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '3' },
      instances: { type: 'string', default: '1,2' },
      'idle-timeout': { type: 'string', default: '5s' },
      'poll-ms': { type: 'string', default: '100' },
      'timeout-seconds': { type: 'string', default: '180' },
      'latency-seconds': { type: 'string', default: '40' },
      'latency-devices': { type: 'string', default: '20' },
      profile: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const num = numberOption;
  const instances = values.instances
    .split(',')
    .map((s) => num('instances', s.trim(), 1, TELEMETRY_PARTITIONS));
  const idleTimeoutMs = durationOption('idle-timeout', values['idle-timeout']);
  const devices = num('devices', values.devices, 1, 1_000_000);
  const events = num('events', values.events, devices, 50_000_000);
  return {
    events,
    devices,
    intervalMs: num('interval-ms', values['interval-ms'], 1, 3_600_000),
    rounds: num('rounds', values.rounds, 1, 100),
    instances: [...new Set(instances)],
    idleTimeout: values['idle-timeout'],
    idleTimeoutMs,
    pollMs: num('poll-ms', values['poll-ms'], 10, 10_000),
    timeoutSeconds: num('timeout-seconds', values['timeout-seconds'], 10, 86_400),
    latencySeconds: num('latency-seconds', values['latency-seconds'], 0, 3_600),
    latencyDevices: num('latency-devices', values['latency-devices'], 1, 1_000),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
  };
}

// ---- lifecycle: everything started is stopped on the way out, whatever the way out is ----

stopOnExit('the processors and the servers');

class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

function checkInterrupted(): void {
  if (isInterrupted()) throw new Interrupted();
}

async function processorProcess(
  env: RunEnv,
  tsdb: Tsdb,
  instanceId: string,
  extraEnv: Record<string, string>,
  nodeArgs: string[] = [],
): Promise<{ proc: ProcessorProcess; release: () => Promise<void> }> {
  const proc = await startProcessorProcess({
    cwd: REPO_ROOT,
    natsUrl: env.nats.url,
    influxUrl: tsdb.url,
    instanceId,
    env: extraEnv,
    nodeArgs,
  });
  const release = hold(
    `processor ${instanceId}`,
    // Ctrl-C also reaches nats-server and VictoriaMetrics, and a processor without them drains forever.
    () => proc.stop(isInterrupted() ? INTERRUPTED_STOP_MS : undefined),
    () => proc.kill(),
  );
  return { proc, release };
}

// ---- figures ----

const int = (n: number) => (Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US'));
const sec = (n: number) => (Number.isNaN(n) ? '–' : `${n.toFixed(2)} s`);
const ratio = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? '–' : `${(a / b).toFixed(2)}×`);
const cpuText = (cpu: readonly { name: string; percent: number }[]) =>
  cpu.map((c) => `${c.name} ${Math.round(c.percent)}%`).join(', ');

/** Time at which a monotone series of (t, value) polls first reaches `target`, linearly interpolated. */
function crossing(samples: readonly { t: number; events: number }[], target: number): number {
  const i = samples.findIndex((s) => s.events >= target);
  if (i < 0) return Number.NaN;
  const b = samples[i]!;
  const a = samples[i - 1];
  if (a === undefined || b.events === a.events) return b.t;
  return a.t + ((target - a.events) / (b.events - a.events)) * (b.t - a.t);
}

// ---- the events ----

interface RunEnv {
  nats: NatsServer;
  nc: NatsConnection;
  log: Logger;
}

interface Prefill {
  seconds: number;
  stored: number;
  failed: number;
  avgBytes: number;
  firstTsMs: number;
  lastTsMs: number;
}

/**
 * Event i is reading ⌊i/D⌋ of device i mod D: the stream is in event-time order, as a live fleet writes
 * it. Readings of a device are `intervalMs` apart, devices spread over the interval, and the last
 * readings lie over a minute in the past, so every window but each device's last closes on event time.
 * The data ends just before a minute boundary: after IDLE_TIMEOUT a quiet device's event time moves on
 * with the wall clock, and its last windows become final once that passes their end plus the allowed
 * lateness, so ending at a boundary keeps that wait short and the same for every device.
 */
async function prefill(env: RunEnv, o: Options): Promise<Prefill> {
  const readingsPerDevice = Math.ceil(o.events / o.devices);
  const spanMs = readingsPerDevice * o.intervalMs;
  const minute = 60_000;
  const t0 = Math.floor((Date.now() - 2 * minute) / minute) * minute - spanMs;
  const tsOf = (i: number) =>
    t0 + Math.floor(i / o.devices) * o.intervalMs + Math.floor(((i % o.devices) * o.intervalMs) / o.devices);
  selfCheck(encodeReading(TENANT, 0, 0, tsOf(0), tsOf(0) + 50));

  // A connection of its own: the publisher's PubAck subscription stays on it until it closes.
  const nc = await connect({ servers: env.nats.url, name: 'bench prefill' });
  const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log: env.log });
  let stored = 0;
  let failed = 0;
  let bytes = 0;
  let wake: (() => void) | undefined;
  const done = (err: Error | undefined, duplicate: boolean) => {
    if (err || duplicate) failed++;
    else stored++;
    if (wake !== undefined && publisher.inFlight <= PREFILL_LOW_WATER) {
      const w = wake;
      wake = undefined;
      w();
    }
  };
  const started = performance.now();
  try {
    for (let i = 0; i < o.events; i++) {
      checkInterrupted();
      const ts = tsOf(i);
      // receivedAt a little after the event time, as if the fleet had been live then.
      const e = encodeReading(TENANT, i % o.devices, Math.floor(i / o.devices), ts, ts + 50);
      bytes += e.data.byteLength;
      publisher.publish(e.subject, e.data, e.msgId, () => true, done);
      if (publisher.inFlight >= PREFILL_HIGH_WATER) {
        await new Promise<void>((r) => {
          wake = r;
        });
      }
    }
    const left = await publisher.settle(60_000);
    if (left > 0) throw new Error(`${left} pre-fill publishes still unacknowledged after 60 s`);
  } finally {
    publisher.close();
    await nc.close();
  }
  return {
    seconds: (performance.now() - started) / 1000,
    stored,
    failed,
    avgBytes: bytes / o.events,
    firstTsMs: tsOf(0),
    lastTsMs: tsOf(o.events - 1),
  };
}

// ---- state between rounds ----

/** True when every partition's processor consumer exists and `done` holds for it (server-side state). */
async function everyPartition(nc: NatsConnection, done: (info: ConsumerInfo) => boolean): Promise<boolean> {
  const jsm = await jetstreamManager(nc);
  for (let p = 0; p < TELEMETRY_PARTITIONS; p++) {
    const info = await jsm.consumers.info(TELEMETRY_STREAM, consumerName(p)).catch(() => undefined);
    if (!info || !done(info)) return false;
  }
  return true;
}

/** Everything delivered and acknowledged, which the processors do once a checkpoint covers it. */
const acknowledged = (info: ConsumerInfo) => info.num_pending === 0 && info.num_ack_pending === 0;

/** Where each processor consumer stands, for a round that timed out. */
async function consumerStates(nc: NatsConnection): Promise<string> {
  const jsm = await jetstreamManager(nc);
  const lines: string[] = [];
  for (let p = 0; p < TELEMETRY_PARTITIONS; p++) {
    const info = await jsm.consumers.info(TELEMETRY_STREAM, consumerName(p)).catch(() => undefined);
    lines.push(
      info
        ? `  p${p}: delivered ${info.delivered.stream_seq}, ack floor ${info.ack_floor.stream_seq}, ` +
            `pending ${info.num_pending}, ack pending ${info.num_ack_pending}, waiting pulls ${info.num_waiting}`
        : `  p${p}: no consumer`,
    );
  }
  return lines.join('\n');
}

// ---- the peer: a plain consumer of the same stream ----

interface PeerRound {
  partitioned: boolean;
  index: number;
  rate: number;
  seconds: number;
  count: number;
  cpu: { name: string; percent: number }[];
}

/**
 * What any Node consumer of this stream can reach here: pull consumers with ack policy "all", one ack
 * per 1024 messages, `json()` on each message (as the processor's parse does) and nothing else.
 * `partitioned` uses one filtered consumer per partition, the shape the processors consume in.
 */
async function peerRound(env: RunEnv, partitioned: boolean, expected: number, timeoutMs: number) {
  const js = jetstream(env.nc);
  const jsm = await jetstreamManager(env.nc);
  const filters = partitioned
    ? Array.from({ length: TELEMETRY_PARTITIONS }, (_, p) => telemetryPartitionFilter(p))
    : [TELEMETRY_SUBJECTS];
  const names = filters.map((_, i) => `bench_peer_${i}`);
  for (const [i, name] of names.entries()) {
    await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
    await jsm.consumers.add(TELEMETRY_STREAM, {
      durable_name: name,
      filter_subject: filters[i]!,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.All,
      // Acks come every 1024 messages: the default limit of 1000 unacknowledged would stall the pull.
      max_ack_pending: -1,
      ack_wait: nanos(10 * 60_000),
    });
  }
  const sampler = new CpuSampler(
    () =>
      new Map([
        ['bench', process.pid],
        ['nats-server', env.nats.pid],
      ]),
  );
  let count = 0;
  let first = Number.NaN;
  let last = Number.NaN;
  const iterators = await Promise.all(
    names.map(async (name) =>
      (await js.consumers.get(TELEMETRY_STREAM, name)).consume({ max_messages: FETCH_BATCH }),
    ),
  );
  const drain = async (messages: (typeof iterators)[number]) => {
    let mine = 0;
    let lastMsg: JsMsg | undefined;
    for await (const m of messages) {
      if (count === 0) {
        first = performance.now();
        sampler.start();
      }
      m.json();
      count++;
      lastMsg = m;
      if (++mine % PEER_ACK_EVERY === 0) m.ack();
      // The stream does not grow during the round: pending 0 marks this consumer's last message.
      if (m.info.pending === 0) break;
    }
    lastMsg?.ack();
    last = Number.isNaN(last) ? performance.now() : Math.max(last, performance.now());
  };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<void>((r) => {
    timer = setTimeout(r, timeoutMs);
  });
  await Promise.race([Promise.all(iterators.map(drain)), timedOut]);
  clearTimeout(timer);
  sampler.stop();
  for (const it of iterators) it.stop();
  for (const name of names) await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
  if (count !== expected) throw new Error(`peer consumed ${count} messages, expected ${expected}`);
  const seconds = (last - first) / 1000;
  return { rate: count / seconds, seconds, count, cpu: sampler.usage() };
}

// ---- the processors ----

interface ProcessorRound {
  instances: number;
  index: number;
  /** Events per second from the first event consumed until everything is durable in the TSDB. */
  rate: number;
  /** Rate between 10 % and 90 % of the events consumed: start-up and the tail left out. */
  steady: number;
  durableS: number;
  checkpointedS: number;
  events: number;
  late: number;
  duplicates: number;
  invalid: number;
  windows: number;
  retries: number;
  /** Write requests the TSDB accepted, and the seconds they took in all (one in flight per instance). */
  tsdbRequests: number;
  tsdbRequestS: number;
  /** GC pauses while timed, all instances together, and the major (mark-compact) part of them. */
  gcS: number;
  majorGcS: number;
  /** Worst event-loop delay an instance reported while timed. */
  maxLagMs: number;
  /** Partitions each instance held when everything was durable. */
  split: number[];
  /** Between the first events of the instances, by poll. */
  skewMs: number;
  scrapeMs: number;
  /** Raw `telemetry` samples of one field in the TSDB afterwards; undefined when not checked. */
  storedRaw: number | undefined;
  /** Longest time between two lease rounds (heartbeats) of one instance; LEASE_TTL is the limit. */
  heartbeatGapMs: number;
  /** Partitions that changed owner, or were given back, after the first claims. */
  moves: number;
  /** SIGTERM until the processors had exited (sequentially). */
  stopS: number;
  cpu: { name: string; percent: number }[];
}

async function countRaw(tsdb: Tsdb): Promise<number> {
  // Events are minutes old: a day's look-back covers them, whichever round this is.
  const query = `sum(count_over_time(${metricName(TELEMETRY_MEASUREMENT, 'temperature')}{tenant="${TENANT}"}[1d]))`;
  const res = await fetch(`${tsdb.url}/api/v1/query?${new URLSearchParams({ query })}`);
  const body = (await res.json()) as { data?: { result?: { value?: [number, string] }[] } };
  return Number(body.data?.result?.[0]?.value?.[1] ?? 0);
}

async function processorRound(
  env: RunEnv,
  o: Options,
  instances: number,
  index: number,
  profile?: { nodeArgs: string[] },
): Promise<ProcessorRound> {
  await resetProcessorState(env.nc);
  const { tsdb, release: releaseTsdb } = await heldVictoriaMetrics();
  const running: { proc: ProcessorProcess; release: () => Promise<void> }[] = [];
  let leases: LeaseWatch | undefined;
  try {
    const ids = Array.from({ length: instances }, (_, i) => `bench-${String.fromCharCode(97 + i)}`);
    if (instances > 1) await announceInstances(env.nc, ids);
    leases = await LeaseWatch.start(env.nc);
    const spawned = performance.now();
    for (const id of ids) {
      running.push(await processorProcess(env, tsdb, id, { IDLE_TIMEOUT: o.idleTimeout }, profile?.nodeArgs));
    }
    const procs = running.map((r) => r.proc);
    const sampler = new CpuSampler(
      () =>
        new Map<string, number | undefined>([
          ...procs.map((p) => [`processor ${p.instanceId.slice(-1)}`, p.pid] as const),
          ['nats-server', env.nats.pid],
          ['victoria-metrics', tsdb.pid],
          ['bench', process.pid],
        ]),
    );

    const samples: { t: number; events: number }[] = [];
    const firstSeen = new Map<string, number>();
    const scrapeMs: number[] = [];
    let durableAt = Number.NaN;
    let checkpointedAt = Number.NaN;
    let atDurable: (Scrape | undefined)[] = [];
    let atFirst: (Scrape | undefined)[] = [];
    let maxLagS = 0;
    const deadline = spawned + o.timeoutSeconds * 1000;
    const checkpointWaitMs = o.idleTimeoutMs + o.intervalMs + ALLOWED_LATENESS_MS + CHECKPOINT_SLACK_MS;
    for (;;) {
      checkInterrupted();
      const dead = procs.find((p) => !p.running);
      if (dead) throw new Error(`processor ${dead.instanceId} exited:\n${dead.tail()}`);
      const sent = performance.now();
      const scrapes = await Promise.all(procs.map((p) => scrape(p.httpPort)));
      const got = performance.now();
      // Counters are read when the request is served: between sending and the answer.
      const t = (sent + got) / 2;
      const sum = (name: string) => scrapes.reduce((n, s) => n + (s?.sum(name) ?? 0), 0);
      const events = sum('processor_events_total');
      if (scrapes.every((s) => s !== undefined)) scrapeMs.push(got - sent);
      scrapes.forEach((s, i) => {
        const id = procs[i]!.instanceId;
        if ((s?.sum('processor_events_total') ?? 0) > 0 && !firstSeen.has(id)) firstSeen.set(id, t);
      });
      if (events > 0 && atFirst.length === 0) {
        sampler.start();
        atFirst = scrapes;
      }
      if (events > 0 && Number.isNaN(durableAt)) {
        // prom-client resets its event-loop delay histogram on every scrape: this is the poll's worst.
        for (const s of scrapes)
          maxLagS = Math.max(maxLagS, s?.max('processor_nodejs_eventloop_lag_max_seconds') || 0);
      }
      samples.push({ t, events });

      if (Number.isNaN(durableAt)) {
        if (events >= o.events && sum('processor_tsdb_pending_lines') === 0 && scrapes.every((s) => s)) {
          durableAt = t;
          sampler.stop();
          atDurable = scrapes;
          if (profile) break;
        } else if (got > deadline || (atFirst.length === 0 && got - spawned > START_TIMEOUT_MS)) {
          throw new Error(
            `round timed out with ${events} of ${o.events} events consumed, ` +
              `${sum('processor_tsdb_pending_lines')} lines pending in the writers\n` +
              `${await consumerStates(env.nc)}\n${procs.map((p) => p.tail()).join('\n')}`,
          );
        }
      } else if (await everyPartition(env.nc, acknowledged)) {
        checkpointedAt = performance.now();
        break;
      } else if (got - durableAt > checkpointWaitMs) {
        console.warn(`  checkpoints did not reach the end within ${checkpointWaitMs} ms`);
        break;
      }
      await sleep(o.pollMs);
    }

    const i90 = crossing(samples, 0.9 * o.events);
    const i10 = crossing(samples, 0.1 * o.events);
    const steady = (0.8 * o.events) / ((i90 - i10) / 1000);
    // The first event was consumed between the last poll that saw none and the first that saw some;
    // at the steady rate, the events that poll saw put it no earlier than this.
    const k = samples.findIndex((s) => s.events > 0);
    const firstAt = Math.max(
      samples[k - 1]?.t ?? spawned,
      samples[k]!.t - (samples[k]!.events / steady) * 1000,
    );
    const total = (name: string, labels?: string) =>
      atDurable.reduce((n, s) => n + (s?.sum(name, labels) ?? 0), 0);
    // GC during the timed part, from the processors' own default metrics (main thread pauses).
    const gcSince = (labels?: string) =>
      total('processor_nodejs_gc_duration_seconds_sum', labels) -
      atFirst.reduce((n, s) => n + (s?.sum('processor_nodejs_gc_duration_seconds_sum', labels) ?? 0), 0);
    const seen = [...firstSeen.values()];
    const storedRaw = profile ? undefined : await countRaw(tsdb);
    const leaseReport = await leases.stop();
    // SIGTERM: each processor stops its partitions one by one, checkpoints and gives the leases back.
    const stopping = performance.now();
    for (const r of running) await r.release();
    const stopS = (performance.now() - stopping) / 1000;
    return {
      instances,
      index,
      rate: o.events / ((durableAt - firstAt) / 1000),
      steady,
      durableS: (durableAt - firstAt) / 1000,
      checkpointedS: (checkpointedAt - firstAt) / 1000,
      events: total('processor_events_total'),
      late: total('processor_late_events_total'),
      duplicates: total('processor_duplicate_events_total'),
      invalid: total('processor_invalid_events_total'),
      windows: total('processor_windows_emitted_total'),
      retries: total('processor_tsdb_retries_total'),
      tsdbRequests: total('processor_tsdb_write_seconds_count'),
      tsdbRequestS: total('processor_tsdb_write_seconds_sum'),
      gcS: gcSince(),
      majorGcS: gcSince('kind="major"'),
      maxLagMs: maxLagS * 1000,
      split: atDurable.map((s) => s?.sum('processor_owned_partitions') ?? 0),
      skewMs: seen.length > 1 ? Math.max(...seen) - Math.min(...seen) : 0,
      scrapeMs: median(scrapeMs),
      storedRaw,
      heartbeatGapMs: Math.max(0, ...leaseReport.heartbeatGapMs.values()),
      stopS,
      moves: leaseReport.handovers + leaseReport.releases,
      cpu: sampler.usage(),
    };
  } finally {
    await leases?.stop();
    // Already done unless the round failed; the processors write their CPU profiles on the way out.
    for (const r of running) await r.release();
    await releaseTsdb();
  }
}

// ---- latency: publish → 10 s aggregate readable ----

interface LatencyResult {
  windows: number;
  missing: number;
  devices: number;
  /** Seconds, sorted: window end → first readable in the TSDB. */
  total: number[];
  /** Window end → the device's next reading (what emits the window, on event time). */
  trigger: number[];
  /** That reading published → aggregate readable: processor, writer flush, TSDB. */
  rest: number[];
  /** VictoriaMetrics alone: a line it answered 204 to → readable. */
  canary: number[];
  /** The writer's own figure: mean wait of a batch's oldest line until the TSDB accepted it. */
  writerWaitS: number;
  publishFailures: number;
}

async function latencyPhase(env: RunEnv, o: Options): Promise<LatencyResult> {
  const jsm = await jetstreamManager(env.nc);
  // "A processor on an empty stream": the throughput rounds' events go; sequences carry on.
  await jsm.streams.purge(TELEMETRY_STREAM);
  await resetProcessorState(env.nc);
  const { tsdb, release: releaseTsdb } = await heldVictoriaMetrics();
  // Processor defaults (IDLE_TIMEOUT 30 s and all): live windows close on event time.
  const { proc, release } = await processorProcess(env, tsdb, 'bench-latency', {});
  try {
    await waitForPartitions(proc, TELEMETRY_PARTITIONS, START_TIMEOUT_MS, checkInterrupted);

    const run = randomUUID();
    const visible = new Map<string, number>();
    const canaryWritten = new Map<string, number>();
    const canaryVisible = new Map<string, number>();
    let polling = true;
    // Visibility is known to within a poll: it happened between the previous query and this one.
    const poller = (async () => {
      let previous = Date.now();
      while (polling) {
        const sent = Date.now();
        const [aggregates, canaries] = await Promise.all([
          tsdb.readSamples({
            measurement: AGGREGATE_MEASUREMENT,
            field: 'count',
            tags: { tenant: LATENCY_TENANT, window: formatDuration(LATENCY_WINDOW_MS) },
          }),
          tsdb.readSamples({ measurement: CANARY_MEASUREMENT, field: 'v', tags: { run } }),
        ]).catch(() => [[], []]);
        const at = (previous + sent) / 2;
        for (const s of aggregates) {
          const key = `${s.tags.device}@${s.timestamp}`;
          if (!visible.has(key)) visible.set(key, at);
        }
        for (const s of canaries) if (!canaryVisible.has(s.tags.seq!)) canaryVisible.set(s.tags.seq!, at);
        previous = sent;
        await sleep(LATENCY_POLL_MS);
      }
    })();

    const js = jetstream(env.nc);
    const readings = new Map<string, number[]>();
    let publishFailures = 0;
    const periodMs = 1000 / o.latencyDevices;
    const start = Date.now() + 100;
    const ticks = o.latencySeconds * o.latencyDevices;
    let canaryTick = Math.floor(Math.random() * o.latencyDevices);
    // Devices take turns, so their readings fall evenly over each second: the wait for the reading
    // that closes a window is then spread from 0 to 1 s, as in a real fleet.
    for (let j = 0; j < ticks; j++) {
      checkInterrupted();
      const wait = start + j * periodMs - Date.now();
      if (wait > 0) await sleep(wait);
      const d = j % o.latencyDevices;
      const seq = Math.floor(j / o.latencyDevices);
      const now = Date.now();
      const e = encodeReading(LATENCY_TENANT, d, seq, now, now);
      const mine = readings.get(deviceName(d)) ?? [];
      mine.push(now);
      readings.set(deviceName(d), mine);
      js.publish(e.subject, e.data, e.msgId === undefined ? {} : { msgID: e.msgId }).catch(() => {
        publishFailures++;
      });
      if (d === canaryTick) {
        // Once a second, a line straight into VictoriaMetrics: how long its own visibility takes. At a
        // random moment of each second: it becomes searchable at its next internal flush, on a clock of
        // its own, and a fixed phase would always measure the same part of that cycle.
        const line = `${CANARY_MEASUREMENT},run=${run},seq=${seq} v=1 ${now}`;
        void fetch(`${tsdb.url}/api/v2/write?org=bench&bucket=bench&precision=ms`, {
          method: 'POST',
          body: line,
        })
          .then((res) => {
            if (res.status === 204) canaryWritten.set(String(seq), Date.now());
          })
          .catch(() => undefined);
      }
      if (d === o.latencyDevices - 1) canaryTick = Math.floor(Math.random() * o.latencyDevices);
    }

    // Windows that a later reading of the same device closed, with that reading's time.
    const expected = new Map<string, { end: number; trigger: number }>();
    for (const [device, ts] of readings) {
      for (const t of ts) {
        const startMs = Math.floor(t / LATENCY_WINDOW_MS) * LATENCY_WINDOW_MS;
        const end = startMs + LATENCY_WINDOW_MS;
        const trigger = ts.find((x) => x >= end);
        if (trigger !== undefined) expected.set(`${device}@${startMs}`, { end, trigger });
      }
    }
    const drainUntil = Date.now() + LATENCY_DRAIN_MS;
    while (
      Date.now() < drainUntil &&
      ([...expected.keys()].some((k) => !visible.has(k)) || canaryVisible.size < canaryWritten.size)
    ) {
      checkInterrupted();
      await sleep(LATENCY_POLL_MS);
    }
    polling = false;
    await poller;

    const total: number[] = [];
    const trigger: number[] = [];
    const rest: number[] = [];
    for (const [key, w] of expected) {
      const at = visible.get(key);
      if (at === undefined) continue;
      total.push((at - w.end) / 1000);
      trigger.push((w.trigger - w.end) / 1000);
      rest.push((at - w.trigger) / 1000);
    }
    const canary = [...canaryWritten].flatMap(([seq, at]) => {
      const seen = canaryVisible.get(seq);
      return seen === undefined ? [] : [(seen - at) / 1000];
    });
    const metrics = await scrape(proc.httpPort);
    const waitCount = metrics?.sum('processor_tsdb_latency_seconds_count') ?? 0;
    const byValue = (a: number, b: number) => a - b;
    return {
      windows: expected.size,
      missing: expected.size - total.length,
      devices: o.latencyDevices,
      total: total.sort(byValue),
      trigger: trigger.sort(byValue),
      rest: rest.sort(byValue),
      canary: canary.sort(byValue),
      writerWaitS:
        waitCount > 0 ? (metrics?.sum('processor_tsdb_latency_seconds_sum') ?? 0) / waitCount : Number.NaN,
      publishFailures,
    };
  } finally {
    await release();
    await releaseTsdb();
  }
}

// ---- the run ----

type Config = { kind: 'peer'; partitioned: boolean } | { kind: 'processor'; instances: number };

const configName = (c: Config) =>
  c.kind === 'peer'
    ? c.partitioned
      ? `peer, ${TELEMETRY_PARTITIONS} consumers`
      : 'peer, 1 consumer'
    : `processor ×${c.instances}`;

function peerLine(label: string, r: PeerRound): string {
  return (
    `${label.padEnd(11)} ${configName({ kind: 'peer', partitioned: r.partitioned }).padEnd(20)} ` +
    `${int(r.rate).padStart(8)} msg/s   ${sec(r.seconds)}  | cpu ${cpuText(r.cpu)}`
  );
}

function processorLine(label: string, r: ProcessorRound, expected: number): string {
  const checks = [
    r.events === expected ? undefined : `events ${r.events} ≠ ${expected}`,
    r.storedRaw === undefined || r.storedRaw === expected ? undefined : `TSDB holds ${r.storedRaw} raw`,
  ].filter(Boolean);
  return (
    `${label.padEnd(11)} ${configName({ kind: 'processor', instances: r.instances }).padEnd(20)} ` +
    `${int(r.rate).padStart(8)} events/s (steady ${int(r.steady)}/s)  durable after ${sec(r.durableS)}, ` +
    `checkpointed after ${sec(r.checkpointedS)}` +
    `\n${''.padEnd(12)}late ${r.late}, duplicates ${r.duplicates}, invalid ${r.invalid}, windows ${int(r.windows)}, ` +
    `tsdb retries ${r.retries}` +
    `\n${''.padEnd(12)}writer: ${r.tsdbRequests} requests, ${sec(r.tsdbRequestS / r.tsdbRequests)} each, ` +
    `in flight ${Math.round((100 * r.tsdbRequestS) / r.instances / r.durableS)}% of the time per instance` +
    `\n${''.padEnd(12)}main thread: GC ${sec(r.gcS / r.instances)} per instance ` +
    `(${Math.round((100 * r.gcS) / r.instances / r.durableS)}% of the time, major ${sec(r.majorGcS / r.instances)}), ` +
    `worst event-loop delay ${Math.round(r.maxLagMs)} ms` +
    (r.instances > 1 ? `, partitions ${r.split.join('+')}, start skew ${Math.round(r.skewMs)} ms` : '') +
    `, /metrics ${r.scrapeMs.toFixed(1)} ms` +
    `\n${''.padEnd(12)}leases: longest gap between lease rounds ${sec(r.heartbeatGapMs / 1000)} ` +
    `(LEASE_TTL ${DEFAULT_LEASE_TTL}), partitions moved ${r.moves}; SIGTERM → exited in ${sec(r.stopS)}` +
    (r.storedRaw === undefined ? '' : `, TSDB raw ${int(r.storedRaw)}`) +
    (checks.length > 0 ? `  !! ${checks.join('; ')}` : '') +
    `\n${''.padEnd(12)}cpu ${cpuText(r.cpu)}`
  );
}

async function main(): Promise<void> {
  const o = options();
  const started = new Date();
  const log = createLogger('bench', 'warn');
  const nats = await heldNatsServer({ serverName: 'bench_processors' });
  const nc = await heldNatsConnection(nats.url, 'bench');
  const env: RunEnv = { nats, nc, log };
  const natsVersion = nc.info?.version ?? 'unknown';
  await ensureStreams(
    await jetstreamManager(nc),
    { telemetryMaxAgeMs: DEFAULT_TELEMETRY_MAX_AGE_MS, dedupWindowMs: DEFAULT_DEDUP_WINDOW_MS, replicas: 1 },
    log,
  );

  const readingsPerDevice = Math.ceil(o.events / o.devices);
  console.log(
    `processor bench: ${int(o.events)} events (${int(o.devices)} devices × ~${readingsPerDevice} readings ` +
      `${o.intervalMs} ms apart, 3 metrics), ${o.rounds} rounds of: peer ×2 shapes, processor ×${o.instances.join(', ×')}` +
      `; IDLE_TIMEOUT ${o.idleTimeout}; polling /metrics every ${o.pollMs} ms`,
  );
  const filled = await prefill(env, o);
  const info = await (await jetstreamManager(nc)).streams.info(TELEMETRY_STREAM);
  console.log(
    `pre-filled ${TELEMETRY_STREAM}: ${int(filled.stored)} events stored in ${sec(filled.seconds)} ` +
      `(${int(filled.stored / filled.seconds)} msg/s), ${Math.round(filled.avgBytes)} bytes each, ` +
      `event times ${new Date(filled.firstTsMs).toISOString()} – ${new Date(filled.lastTsMs).toISOString()}; ` +
      `stream holds ${int(info.state.messages)}`,
  );
  if (filled.failed > 0 || info.state.messages !== o.events) {
    throw new Error(`pre-fill incomplete: ${filled.failed} publishes failed or were duplicates`);
  }

  const configs: Config[] = [
    { kind: 'peer', partitioned: false },
    { kind: 'peer', partitioned: true },
    ...o.instances.map((instances) => ({ kind: 'processor' as const, instances })),
  ];
  const peers: PeerRound[] = [];
  const processors: ProcessorRound[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    // Rotate the order each round so that no configuration always runs first or last.
    const shift = (round - 1) % configs.length;
    for (const c of [...configs.slice(shift), ...configs.slice(0, shift)]) {
      checkInterrupted();
      const label = `round ${round}/${o.rounds}`;
      if (c.kind === 'peer') {
        const r = await peerRound(env, c.partitioned, o.events, o.timeoutSeconds * 1000);
        const result = { partitioned: c.partitioned, index: round, ...r };
        peers.push(result);
        console.log(peerLine(label, result));
      } else {
        const r = await processorRound(env, o, c.instances, round);
        processors.push(r);
        console.log(processorLine(label, r, o.events));
      }
      await sleep(SETTLE_MS);
    }
  }

  if (o.profileDir !== undefined) {
    checkInterrupted();
    await mkdir(o.profileDir, { recursive: true });
    const since = Date.now();
    console.log(`\nprofiled round (not counted): 1 processor with --cpu-prof into ${o.profileDir}`);
    const r = await processorRound(env, o, 1, 0, {
      nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`],
    });
    console.log(
      `profiled    processor ×1  ${int(r.rate)} events/s (steady ${int(r.steady)}/s), durable after ${sec(r.durableS)}` +
        `, SIGTERM → exited in ${sec(r.stopS)}` +
        ` | cpu ${cpuText(r.cpu)}`,
    );
    const file = newestProfile(o.profileDir, since);
    console.log(file ? `\n${formatSummary(file)}` : `\nno .cpuprofile found in ${o.profileDir}`);
  }

  let latency: LatencyResult | undefined;
  if (o.latencySeconds > 0) {
    checkInterrupted();
    console.log(
      `\nlatency: 1 processor on an empty stream, ${o.latencyDevices} devices × 1 reading/s for ${o.latencySeconds} s`,
    );
    latency = await latencyPhase(env, o);
  }

  // ---- medians and the README tables ----
  const peerStats = [false, true].map((partitioned) => {
    const rs = peers.filter((p) => p.partitioned === partitioned);
    return {
      partitioned,
      rate: median(rs.map((r) => r.rate)),
      min: Math.min(...rs.map((r) => r.rate)),
      max: Math.max(...rs.map((r) => r.rate)),
      all: rs.map((r) => r.rate),
      cpu: (rs[0]?.cpu ?? []).map((c) => ({
        name: c.name,
        percent: median(rs.map((r) => r.cpu.find((x) => x.name === c.name)?.percent ?? Number.NaN)),
      })),
    };
  });
  // A round whose counts are off (partitions replayed after a lease moved) timed something else:
  // shown, marked, and left out of the medians.
  const valid = (r: ProcessorRound) => r.events === o.events && r.late + r.duplicates + r.invalid === 0;
  const procStats = o.instances.map((instances) => {
    const all = processors.filter((p) => p.instances === instances);
    const rs = all.filter(valid);
    return {
      instances,
      rate: median(rs.map((r) => r.rate)),
      min: Math.min(...rs.map((r) => r.rate)),
      max: Math.max(...rs.map((r) => r.rate)),
      all: all.map((r) => `${int(r.rate)}${valid(r) ? '' : '⚠'}`),
      invalid: all.length - rs.length,
      steady: median(rs.map((r) => r.steady)),
      durableS: median(rs.map((r) => r.durableS)),
      checkpointedS: median(rs.map((r) => r.checkpointedS)),
      split: rs[0]?.split ?? [],
      heartbeatGapS: Math.max(...all.map((r) => r.heartbeatGapMs)) / 1000,
      cpu: (rs[0]?.cpu ?? []).map((c) => ({
        name: c.name,
        percent: median(rs.map((r) => r.cpu.find((x) => x.name === c.name)?.percent ?? Number.NaN)),
      })),
    };
  });
  const peer = peerStats[0]!.rate;
  const peer16 = peerStats[1]!.rate;
  console.log('\nmedians:');
  for (const p of peerStats) {
    console.log(
      `  ${configName({ kind: 'peer', partitioned: p.partitioned }).padEnd(20)} ${int(p.rate).padStart(8)} msg/s ` +
        `(${int(p.min)}–${int(p.max)})  | cpu ${cpuText(p.cpu)}`,
    );
  }
  for (const p of procStats) {
    console.log(
      `  ${configName({ kind: 'processor', instances: p.instances }).padEnd(20)} ${int(p.rate).padStart(8)} events/s ` +
        `(${int(p.min)}–${int(p.max)}), steady ${int(p.steady)}/s, ${ratio(p.rate, peer)} of the 1-consumer peer, ` +
        `${ratio(p.rate, peer16)} of the ${TELEMETRY_PARTITIONS}-consumer peer  | cpu ${cpuText(p.cpu)}` +
        (p.invalid > 0
          ? `\n${''.padEnd(23)}${p.invalid} round(s) left out: partitions replayed after a lease moved`
          : '') +
        `\n${''.padEnd(23)}longest gap between lease rounds ${sec(p.heartbeatGapS)}`,
    );
  }
  const one = procStats.find((p) => p.instances === 1);
  const two = procStats.find((p) => p.instances === 2);
  if (one) {
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    console.log(`  target ≥ 50,000 events/s per instance: ${int(one.rate)} → ${verdict(one.rate >= 50_000)}`);
    console.log(
      `  never below the gateway's ingest rate (~27,000/s, README Performance, not measured in this run): ` +
        `${verdict(one.rate >= 27_000)}`,
    );
  }
  if (one && two) console.log(`  scale-out ×2 / ×1: ${ratio(two.rate, one.rate)}`);

  const date = started.toISOString().slice(0, 10);
  const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const machine =
    `Machine: nproc ${availableParallelism()} (${cpuModel}), Node ${process.version}, nats-server ${natsVersion}, ` +
    `VictoriaMetrics ${victoriaMetricsVersion()} (standing in for InfluxDB); processors, nats-server, ` +
    'VictoriaMetrics and the bench share the cores.';
  const cell = (all: (number | string)[]) => all.map((x) => (typeof x === 'number' ? int(x) : x)).join(' / ');
  const table = [
    `Processor throughput, measured ${date} with \`npm run bench:processors\`: ${int(o.events)} canonical events ` +
      `(${int(o.devices)} devices × ~${readingsPerDevice} readings, 3 metrics, ~${Math.round(filled.avgBytes)} bytes, ` +
      `event times minutes in the past) pre-filled in \`TELEMETRY\` (file storage) and read from sequence 1 in ` +
      `${o.rounds} rounds, order rotated, medians. Processor rate: first event consumed → every point accepted by ` +
      `the TSDB. ${machine}`,
    '',
    '| consumer | events/s, median (rounds) | vs 1-consumer peer | steady 10–90 % | all durable | all checkpointed¹ |',
    '|---|---|---|---|---|---|',
    ...peerStats.map(
      (p) =>
        `| ${p.partitioned ? `peer: ${TELEMETRY_PARTITIONS} pull consumers (one per partition)` : 'peer: 1 pull consumer'}, ack all / 1024, \`json()\` only ` +
        `| ${int(p.rate)} (${cell(p.all)}) | ${ratio(p.rate, peer)} | | | |`,
    ),
    ...procStats.map(
      (p) =>
        `| processor, ${p.instances} instance${p.instances === 1 ? '' : `s (${p.split.join(' + ')} partitions)`}` +
        ` | **${int(p.rate)}** (${cell(p.all)}) | ${ratio(p.rate, peer)} | ${int(p.steady)} ` +
        `| ${sec(p.durableS)} | ${sec(p.checkpointedS)} |`,
    ),
    '',
    `¹ includes IDLE_TIMEOUT=${o.idleTimeout}: each device's last 10 s and 1 m windows only close that long after its ` +
      'last reading, and they hold the checkpoint back.',
    ...(procStats.some((p) => p.invalid > 0)
      ? ['⚠ counts off (a partition was replayed after its lease moved mid-round): not in the median.']
      : []),
  ];
  console.log(`\n${table.join('\n')}\n`);

  if (latency) {
    const l = latency;
    const row = (what: string, xs: number[]) =>
      `| ${what} | ${sec(quantile(xs, 0.5))} | ${sec(quantile(xs, 0.99))} | ${sec(xs.at(-1) ?? Number.NaN)} |`;
    const lines = [
      `Latency, same run: 1 processor (default settings) on an empty stream, ${l.devices} devices × 1 reading/s ` +
        `for ${o.latencySeconds} s, event time = publish time; VictoriaMetrics polled every ${LATENCY_POLL_MS} ms ` +
        `(figures ±${LATENCY_POLL_MS / 2000} s). ${l.windows - l.missing} of ${l.windows} 10 s windows seen` +
        (l.publishFailures > 0 ? `, ${l.publishFailures} publishes failed` : '') +
        '.',
      '',
      '| 10 s window | p50 | p99 | max |',
      '|---|---|---|---|',
      row('window end → aggregate readable in the TSDB', l.total),
      row('… of which window end → the device’s next reading (emits the window)', l.trigger),
      row('… of which that reading → readable (processor, writer flush ≤ 1 s, TSDB)', l.rest),
      row('VictoriaMetrics alone: write answered 204 → readable', l.canary),
      '',
      `Writer: a batch's oldest line waited ${sec(l.writerWaitS)} on average for the TSDB to accept it.`,
    ];
    console.log(`${lines.join('\n')}\n`);
  }
}

try {
  await main();
} catch (err) {
  if (!isInterrupted()) {
    console.error(`processor bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
} finally {
  if (!isInterrupted()) await cleanup();
}
