import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { parseDuration } from '../common/duration.js';
import { TELEMETRY_MEASUREMENT } from '../contract/measurements.js';
import { TELEMETRY_PARTITIONS } from '../contract/subjects.js';
import { telemetryTopic } from '../contract/topics.js';
import { DEFAULT_DEVICE_MAX_BYTES_PER_SEC, DEFAULT_DEVICE_MAX_MSGS_PER_SEC } from '../gateway/config.js';
import { DEFAULT_LEASE_TTL } from '../processors/config.js';
import { metricName, type Tsdb } from '../test/kit/victoria-metrics.js';
import { checkTelemetryStored } from './checks.js';
import { CpuSampler, machineCpuSeconds, perMessage, processCpuSeconds } from './cpu.js';
import { formatSummary, newestProfile } from './cpuprofile-top.js';
import { type GatewayProcess, startGatewayProcess } from './gateway-process.js';
import { cleanup, hold, isInterrupted, stopOnExit } from './lifecycle.js';
import { type BenchDevice, Fleet, type OpenLoopResult, selfCheck, telemetryPayload } from './mqtt-load.js';
import { heldMqttListener, heldNatsConnection, heldNatsServer, MQTT_MSGS_STREAM } from './nats.js';
import { listOption, numberOption } from './options.js';
import { LeaseWatch } from './processors-leases.js';
import {
  type ProcessorProcess,
  scrape,
  startProcessorProcess,
  waitForPartitions,
} from './processors-process.js';
import { provision } from './provision.js';
import { median, roundFigures } from './stats.js';
import { heldVictoriaMetrics, victoriaMetricsVersion } from './victoria-metrics.js';

/**
 * `npm run bench:pipeline`: the whole pipeline at a fleet's shape — thousands of devices, each its own
 * MQTT connection, each publishing QoS 1 at a few messages a second — against nats-server's own MQTT
 * listener at the same shape, in the same run, rounds interleaved (order rotated each round).
 *
 * - pipeline: gateway process (registry auth) → its nats-server (TELEMETRY) → one processor process
 *   (default config: raw lines, 10 s and 1 m windows, fleet rollups, presence) → VictoriaMetrics.
 * - listener: nats-server's MQTT listener → `$MQTT_msgs`, with a consumer attached so it stores.
 * - no-processor (optional): the pipeline's first two stages only, to tell what the processors cost
 *   nats-server (delivering and acknowledging) on top of storing.
 *
 * Each target's fleet connects once and stays connected; the load is open loop (Fleet.runOpenLoop):
 * every device publishes at its rate whatever comes back, at most `inflight` unacknowledged. Every
 * message is a new reading (its own `seq`, and `ts` its send time), so the TSDB can be checked exactly:
 * after each pipeline round the bench polls VictoriaMetrics until every acknowledged reading of the
 * round is readable as a raw `telemetry` point, and reports how long after the load stopped that was.
 * CPU is read from /proc (utime + stime) for each process over the load window and divided by the
 * messages acknowledged in it.
 */
const HELP = `usage: npm run bench:pipeline -- [options]
  --devices N            devices, each its own MQTT connection (default 2000; --quick 200)
  --rate R               QoS 1 publishes a second per device (default 5)
  --seconds S            length of each timed round (default 30; --quick 5)
  --rounds K             timed rounds per target, interleaved, order rotated (default 3; --quick 2)
  --warmup-seconds S     untimed round per target first (default 5; --quick 2)
  --inflight K           unacknowledged publishes a device may have; a send finding none free is shed (default 16)
  --targets LIST         pipeline,listener,no-processor (default pipeline,listener)
  --no-processor         shorthand: add the no-processor target (gateway + nats-server, nothing consuming)
  --tsdb-wait-seconds S  how long after a round to wait for its readings in the TSDB (default 30)
  --drain-seconds S      wait this long for outstanding PUBACKs after a round (default 10)
  --connect-concurrency C  CONNECTs outstanding at once while a fleet connects (default 64)
  --profile DIR          run the pipeline's gateway with --cpu-prof into DIR and summarise the profile
                         (profiled figures are not comparable with unprofiled ones)
  --profile-processor DIR  the same for the pipeline's processor
  --quick                smoke run: 200 devices, 2 × 5 s rounds (explicit options still win)`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOST = '127.0.0.1';
const TENANT = 'bench';
const CONNECT_TIMEOUT_MS = 60_000;
/** Pause between rounds so the previous target's leftovers (GC, store flushes) stay out of the next window. */
const SETTLE_MS = 1_000;
const TSDB_POLL_MS = 250;
/** node + tsx start-up and the first lease rounds. */
const PROCESSOR_START_TIMEOUT_MS = 60_000;
const LEASE_TTL_MS = parseDuration(DEFAULT_LEASE_TTL)!;
/**
 * A lease round gap against what it is held to: within LEASE_TTL/3 under load (a round every
 * LEASE_TTL/4 may slip by a twelfth), and never past LEASE_TTL, when others may take the leases.
 */
function leaseVerdict(gapS: number): string {
  const third = LEASE_TTL_MS / 3000;
  const bound = ` (LEASE_TTL ${DEFAULT_LEASE_TTL}, asked ≤ LEASE_TTL/3 = ${sec(third)})`;
  if (gapS * 1000 > LEASE_TTL_MS) return `${bound} !! past LEASE_TTL: others may take its leases`;
  return gapS > third ? `${bound} !! over LEASE_TTL/3` : `${bound} OK`;
}

/** The gauge another change adds to the processors; read when it is there. */
const LEASE_GAP_GAUGE = 'processor_lease_round_gap_max_seconds';
/** Margin around a round's `ts` range when counting its points: rounds of a target are tens of seconds apart. */
const TS_MARGIN_MS = 1_000;

type TargetKey = 'pipeline' | 'listener' | 'no-processor';
const TARGET_KEYS: readonly TargetKey[] = ['pipeline', 'listener', 'no-processor'];

interface Options {
  devices: number;
  rate: number;
  seconds: number;
  rounds: number;
  warmupSeconds: number;
  inflight: number;
  targets: TargetKey[];
  tsdbWaitSeconds: number;
  drainSeconds: number;
  connectConcurrency: number;
  profileDir: string | undefined;
  processorProfileDir: string | undefined;
  quick: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      devices: { type: 'string' },
      rate: { type: 'string', default: '5' },
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      'warmup-seconds': { type: 'string' },
      inflight: { type: 'string', default: '16' },
      targets: { type: 'string', default: 'pipeline,listener' },
      'no-processor': { type: 'boolean', default: false },
      'tsdb-wait-seconds': { type: 'string', default: '30' },
      'drain-seconds': { type: 'string', default: '10' },
      'connect-concurrency': { type: 'string', default: '64' },
      profile: { type: 'string' },
      'profile-processor': { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const num = numberOption;
  const q = values.quick;
  const targets = listOption(
    'targets',
    values['no-processor'] ? `${values.targets},no-processor` : values.targets,
    TARGET_KEYS,
  );
  return {
    // Each device is a socket of this process and of the target; the fd limit is the bound.
    devices: num('devices', values.devices ?? (q ? '200' : '2000'), 1, 9_999),
    rate: num('rate', values.rate, 0.1, 1_000, false),
    seconds: num('seconds', values.seconds ?? (q ? '5' : '30'), 1, 3_600, false),
    rounds: num('rounds', values.rounds ?? (q ? '2' : '3'), 1, 100),
    warmupSeconds: num('warmup-seconds', values['warmup-seconds'] ?? (q ? '2' : '5'), 0, 600, false),
    // Packet ids are 16 bits and 0 is not one [MQTT-2.3.1-1].
    inflight: num('inflight', values.inflight, 1, 65_535),
    targets,
    tsdbWaitSeconds: num('tsdb-wait-seconds', values['tsdb-wait-seconds'], 1, 600, false),
    drainSeconds: num('drain-seconds', values['drain-seconds'], 0, 600, false),
    connectConcurrency: num('connect-concurrency', values['connect-concurrency'], 1, 9_999),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    processorProfileDir:
      values['profile-processor'] === undefined ? undefined : resolve(values['profile-processor']),
    quick: q,
  };
}

// ---- lifecycle: everything started is stopped on the way out, whatever the way out is ----

stopOnExit('the fleets, the gateways, the processor and the servers');

class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

function checkInterrupted(): void {
  if (isInterrupted()) throw new Interrupted();
}

async function heldFleet(what: string, connect: () => Promise<Fleet>): Promise<Fleet> {
  const fleet = await connect();
  hold(
    `${what} fleet`,
    async () => fleet.destroy(),
    () => fleet.destroy(),
  );
  return fleet;
}

async function heldGateway(
  natsUrl: string,
  env: Record<string, string>,
  profileDir: string | undefined,
): Promise<GatewayProcess> {
  const since = Date.now();
  if (profileDir !== undefined) await mkdir(profileDir, { recursive: true });
  const nodeArgs = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
  const gw = await startGatewayProcess({ cwd: REPO_ROOT, natsUrl, env, nodeArgs });
  hold(
    'gateway',
    async () => {
      await gw.stop(isInterrupted() ? 2_000 : undefined);
      if (profileDir === undefined) return;
      const file = newestProfile(profileDir, since);
      console.log(file ? `\n${formatSummary(file)}` : `\nno .cpuprofile found in ${profileDir}`);
    },
    () => gw.kill(),
  );
  return gw;
}

async function heldProcessor(
  natsUrl: string,
  tsdb: Tsdb,
  profileDir: string | undefined,
): Promise<ProcessorProcess> {
  const since = Date.now();
  if (profileDir !== undefined) await mkdir(profileDir, { recursive: true });
  // Default configuration: what the bench measures is the processors as shipped.
  const proc = await startProcessorProcess({
    cwd: REPO_ROOT,
    natsUrl,
    influxUrl: tsdb.url,
    instanceId: 'bench-a',
    nodeArgs: profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
  });
  hold(
    'processor',
    async () => {
      // Ctrl-C also reaches nats-server and VictoriaMetrics, and a processor without them drains forever.
      await proc.stop(isInterrupted() ? 2_000 : undefined);
      if (profileDir === undefined) return;
      const file = newestProfile(profileDir, since);
      console.log(file ? `\n${formatSummary(file)}` : `\nno .cpuprofile found in ${profileDir}`);
    },
    () => proc.kill(),
  );
  return proc;
}

// ---- figures ----

const int = (n: number) => (Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US'));
const ms = (n: number) =>
  Number.isNaN(n) ? '–' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
const sec = (n: number) => (Number.isNaN(n) ? '–' : `${n.toFixed(2)} s`);
const us = (n: number) => (Number.isNaN(n) ? '–' : n < 10 ? n.toFixed(1) : n.toFixed(0));
const ratio = (a: number, b: number) =>
  Number.isNaN(a) || Number.isNaN(b) || b === 0 ? '–' : `${(a / b).toFixed(2)}×`;

/** Raw `telemetry` points (one field, so one per reading) of the bench tenant with `ts` in [fromMs, toMs]. */
async function countReadings(tsdb: Tsdb, fromMs: number, toMs: number): Promise<number> {
  // A never-matching filter of its own per query: VictoriaMetrics caches an empty answer for a label
  // filter asked before the rows were searchable (see test/kit/victoria-metrics.ts).
  const selector = `${metricName(TELEMETRY_MEASUREMENT, 'temperature')}{tenant="${TENANT}",kit_nonce!="${randomUUID()}"}`;
  const query = `sum(count_over_time(${selector}[${toMs - fromMs + 1}ms]))`;
  const res = await fetch(
    `${tsdb.url}/api/v1/query?${new URLSearchParams({ query, time: String(toMs / 1000) })}`,
    {
      signal: AbortSignal.timeout(10_000),
    },
  );
  if (!res.ok) throw new Error(`VictoriaMetrics query failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { data?: { result?: { value?: [number, string] }[] } };
  return Number(body.data?.result?.[0]?.value?.[1] ?? 0);
}

// ---- the targets ----

interface Target {
  key: TargetKey;
  fleet: Fleet;
  /** Processes whose CPU counts, by name; `server` ones are the target's own (not the load generator). */
  processes: { name: string; pid: number | undefined; server: boolean }[];
  /** PUBACKs over the whole run, warm-up included: what the stores must hold at the end. */
  acked: number;
  nc: NatsConnection;
  /** The pipeline's TSDB and processor. */
  tsdb?: Tsdb;
  processor?: ProcessorProcess;
}

interface Round {
  target: TargetKey;
  index: number;
  result: OpenLoopResult;
  rate: number;
  p50: number;
  p99: number;
  /** Per process: percent of one core and µs of CPU per acknowledged message over the load window. */
  cpu: { name: string; percent: number; usPerMsg: number; server: boolean }[];
  serverUsPerMsg: number;
  /** Over the load window, percent of one core: the whole machine busy, and this bench's processes. */
  machineBusyPercent: number;
  oursPercent: number;
  tsdb?: { readable: number; seconds: number; complete: boolean };
  lease?: { heartbeatGapS: number; gauge: number; handovers: number };
}

function gatewayEnv(o: Options, payloadBytes: number): { env: Record<string, string>; changed: string[] } {
  // The gateway's per-device limits are left at their defaults unless the offered rate would exceed them.
  const env: Record<string, string> = {};
  const changed: string[] = [];
  // What the byte budget counts per publish: payload and topic.
  const bytesPerSec = o.rate * (payloadBytes + Buffer.byteLength(telemetryTopic('bench-00001')));
  if (o.rate > DEFAULT_DEVICE_MAX_MSGS_PER_SEC) {
    env.DEVICE_MAX_MSGS_PER_SEC = '0';
    changed.push(`DEVICE_MAX_MSGS_PER_SEC=0 (${o.rate}/s > default ${DEFAULT_DEVICE_MAX_MSGS_PER_SEC})`);
  }
  if (bytesPerSec > DEFAULT_DEVICE_MAX_BYTES_PER_SEC) {
    env.DEVICE_MAX_BYTES_PER_SEC = '0';
    changed.push(
      `DEVICE_MAX_BYTES_PER_SEC=0 (${Math.round(bytesPerSec)} B/s > default ${DEFAULT_DEVICE_MAX_BYTES_PER_SEC})`,
    );
  }
  return { env, changed };
}

async function pipelineTarget(
  key: 'pipeline' | 'no-processor',
  o: Options,
  devices: BenchDevice[],
  gwEnv: Record<string, string>,
): Promise<Target> {
  const nats = await heldNatsServer({ serverName: `bench_${key.replace('-', '_')}` });
  const nc = await heldNatsConnection(nats.url, `bench ${key}`);
  const t0 = performance.now();
  await provision(nc, devices);
  console.log(`${key}: provisioned ${devices.length} devices in ${sec((performance.now() - t0) / 1000)}`);
  checkInterrupted();
  const gw = await heldGateway(nats.url, gwEnv, o.profileDir);
  let tsdb: Tsdb | undefined;
  let processor: ProcessorProcess | undefined;
  if (key === 'pipeline') {
    tsdb = (await heldVictoriaMetrics()).tsdb;
    processor = await heldProcessor(nats.url, tsdb, o.processorProfileDir);
    await waitForPartitions(processor, TELEMETRY_PARTITIONS, PROCESSOR_START_TIMEOUT_MS, checkInterrupted);
  }
  const fleet = await connectFleet(key, o, gw.mqttPort, devices);
  return {
    key,
    fleet,
    processes: [
      { name: 'gateway', pid: gw.pid, server: true },
      { name: 'nats-server', pid: nats.pid, server: true },
      ...(processor ? [{ name: 'processor', pid: processor.pid, server: true }] : []),
      ...(tsdb ? [{ name: 'victoria-metrics', pid: tsdb.pid, server: true }] : []),
      { name: 'loadgen', pid: process.pid, server: false },
    ],
    acked: 0,
    nc,
    ...(tsdb ? { tsdb } : {}),
    ...(processor ? { processor } : {}),
  };
}

async function listenerTarget(o: Options, ids: string[]): Promise<Target> {
  const listener = await heldMqttListener('bench_listener', {
    interest: true,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
  });
  const devices = ids.map((id) => ({ id, username: undefined, password: undefined, nextSeq: 0 }));
  const fleet = await connectFleet('listener', o, listener.mqttPort, devices);
  return {
    key: 'listener',
    fleet,
    processes: [
      { name: 'nats-server', pid: listener.server.pid, server: true },
      { name: 'loadgen', pid: process.pid, server: false },
    ],
    acked: 0,
    nc: listener.nc,
  };
}

async function connectFleet(
  key: TargetKey,
  o: Options,
  port: number,
  devices: BenchDevice[],
): Promise<Fleet> {
  const fleet = await heldFleet(key, () =>
    Fleet.connect({
      host: HOST,
      port,
      devices,
      inflight: o.inflight,
      payloadBytes: 0,
      topic: telemetryTopic,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      connectConcurrency: o.connectConcurrency,
    }),
  );
  const errs = [...fleet.connectErrors].map(([what, n]) => `${n}× ${what}`).join('; ');
  console.log(
    `${key}: ${fleet.size} of ${devices.length} devices connected in ${sec(fleet.connectMs / 1000)}` +
      (errs ? ` (failed: ${errs})` : ''),
  );
  return fleet;
}

// ---- a round ----

async function runRound(t: Target, o: Options, index: number, seconds: number): Promise<Round> {
  const sampler = new CpuSampler(() => new Map(t.processes.map((p) => [p.name, p.pid] as const)));
  const leases = t.processor ? await LeaseWatch.start(t.nc) : undefined;
  let loadStopped = 0;
  let machineBefore = machineCpuSeconds();
  let machineAfter = machineBefore;
  const result = await t.fleet.runOpenLoop({
    seconds,
    perDeviceHz: o.rate,
    drainTimeoutMs: o.drainSeconds * 1000,
    onStart: () => {
      sampler.start();
      machineBefore = machineCpuSeconds();
    },
    onEnd: () => {
      sampler.stop();
      machineAfter = machineCpuSeconds();
      loadStopped = performance.now();
    },
  });
  t.acked += result.ackedTotal;
  const { rate, p50, p99 } = roundFigures(result);
  const cpu = perMessage(sampler.usage(), rate).map((c) => ({
    ...c,
    server: t.processes.find((p) => p.name === c.name)?.server ?? false,
  }));
  const round: Round = {
    target: t.key,
    index,
    result,
    rate,
    p50,
    p99,
    cpu,
    serverUsPerMsg: cpu.filter((c) => c.server).reduce((n, c) => n + c.usPerMsg, 0),
    // /proc/stat counts all cores: × cores ÷ total gives percent of one core, as the processes' figures.
    machineBusyPercent:
      machineBefore && machineAfter
        ? ((machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total)) *
          availableParallelism() *
          100
        : Number.NaN,
    oursPercent: cpu.reduce((n, c) => n + c.percent, 0),
  };

  if (t.tsdb && t.processor) {
    // Every reading acknowledged in the round, as a raw point: polled until all are there or the wait ends.
    const from = result.firstTsMs - TS_MARGIN_MS;
    const to = result.lastTsMs + TS_MARGIN_MS;
    const deadline = loadStopped + o.tsdbWaitSeconds * 1000;
    let readable = 0;
    let seenAt = Number.NaN;
    for (;;) {
      checkInterrupted();
      const asked = performance.now();
      readable = await countReadings(t.tsdb, from, to).catch(() => readable);
      if (readable >= result.ackedTotal) {
        seenAt = asked;
        break;
      }
      if (performance.now() > deadline || !t.processor.running) break;
      await sleep(TSDB_POLL_MS);
    }
    if (!t.processor.running) throw new Error(`the processor exited:\n${t.processor.tail()}`);
    round.tsdb = {
      readable,
      seconds: (seenAt - loadStopped) / 1000,
      complete: !Number.isNaN(seenAt),
    };
    const report = await leases!.stop();
    const metrics = await scrape(t.processor.httpPort);
    round.lease = {
      heartbeatGapS: Math.max(0, ...report.heartbeatGapMs.values()) / 1000,
      gauge: metrics?.max(LEASE_GAP_GAUGE) ?? Number.NaN,
      handovers: report.handovers + report.releases,
    };
  }
  return round;
}

function roundLines(label: string, r: Round, o: Options): string {
  const x = r.result;
  const errs = [...x.errors].map(([what, n]) => `${n}× ${what}`).join('; ');
  const lines = [
    `${label.padEnd(10)} ${r.target.padEnd(12)} ${int(r.rate).padStart(7)} acked msg/s ` +
      `(offered ${int(x.offered / o.seconds)}/s, shed ${x.shed})  p50 ${ms(r.p50)} ms  p99 ${ms(r.p99)} ms` +
      `  | unacked ${x.unacked}, disconnects ${x.disconnects}, generator lag max ${ms(x.lagMaxMs)} ms` +
      (errs ? `, errors: ${errs}` : ''),
    `${''.padEnd(11)}CPU µs/msg: ${r.cpu.map((c) => `${c.name} ${us(c.usPerMsg)} (${Math.round(c.percent)}%)`).join(', ')}` +
      ` | server side ${us(r.serverUsPerMsg)} µs/msg | machine busy ${Math.round(r.machineBusyPercent)}% ` +
      `of ${availableParallelism() * 100}%, these processes ${Math.round(r.oursPercent)}%`,
  ];
  if (r.tsdb) {
    const t = r.tsdb;
    lines.push(
      `${''.padEnd(11)}TSDB: ${int(t.readable)} of ${int(x.ackedTotal)} acknowledged readings readable` +
        (t.complete
          ? ` ${sec(t.seconds)} after the load stopped`
          : `; NOT ALL within ${o.tsdbWaitSeconds} s (${int(x.ackedTotal - t.readable)} missing)`) +
        (r.lease
          ? `; leases: longest heartbeat gap ${sec(r.lease.heartbeatGapS)}, ${LEASE_GAP_GAUGE} ` +
            `${Number.isNaN(r.lease.gauge) ? 'not exposed' : sec(r.lease.gauge)}` +
            leaseVerdict(Math.max(r.lease.heartbeatGapS, r.lease.gauge || 0)) +
            (r.lease.handovers > 0 ? `, ${r.lease.handovers} partition moves` : '')
          : ''),
    );
  }
  return lines.join('\n');
}

// ---- the run ----

async function main(): Promise<void> {
  const o = options();
  const started = new Date();
  const payloadBytes = Buffer.byteLength(telemetryPayload(Date.now(), 0));
  selfCheck(telemetryTopic('bench-00001'), 0);
  const ids = Array.from({ length: o.devices }, (_, i) => `bench-${String(i + 1).padStart(5, '0')}`);
  const gw = gatewayEnv(o, payloadBytes);
  console.log(
    `pipeline bench${o.quick ? ' (quick)' : ''}: ${int(o.devices)} devices × ${o.rate} QoS 1 msg/s ` +
      `(${int(o.devices * o.rate)} msg/s offered), ${payloadBytes}-byte payloads, at most ${o.inflight} in flight each; ` +
      `${o.warmupSeconds} s warm-up then ${o.rounds} × ${o.seconds} s per target: ${o.targets.join(', ')}` +
      `\ngateway device limits: ${gw.changed.length > 0 ? gw.changed.join(', ') : 'defaults (the offered rate is within them)'}`,
  );

  const targets: Target[] = [];
  for (const key of o.targets) {
    checkInterrupted();
    const devices = ids.map((id) => ({ id, username: id, password: `secret-${id}`, nextSeq: 0 }));
    targets.push(
      key === 'listener' ? await listenerTarget(o, ids) : await pipelineTarget(key, o, devices, gw.env),
    );
  }
  const natsVersion = targets[0]?.nc.info?.version ?? 'unknown';

  if (o.warmupSeconds > 0) {
    for (const t of targets) {
      checkInterrupted();
      const r = await runRound(t, o, 0, o.warmupSeconds);
      console.log(roundLines('warm-up', r, { ...o, seconds: o.warmupSeconds }));
      await sleep(SETTLE_MS);
    }
  }

  // Whole-run CPU of the pipeline's own processes: work done between its rounds (windows closed after
  // IDLE_TIMEOUT, lease rounds, heartbeats) is in no round's window. Not the load generator's, which
  // loads the other targets too.
  const pipeline = targets.find((t) => t.key === 'pipeline');
  const pipelineServers = pipeline?.processes.filter((p) => p.server) ?? [];
  const wholeRun = new Map(pipelineServers.map((p) => [p.name, processCpuSeconds(p.pid) ?? Number.NaN]));
  const pipelineAckedBefore = pipeline?.acked ?? 0;

  const rounds: Round[] = [];
  for (let i = 1; i <= o.rounds; i++) {
    const shift = (i - 1) % targets.length;
    for (const t of [...targets.slice(shift), ...targets.slice(0, shift)]) {
      checkInterrupted();
      const r = await runRound(t, o, i, o.seconds);
      rounds.push(r);
      console.log(roundLines(`round ${i}/${o.rounds}`, r, o));
      await sleep(SETTLE_MS);
    }
  }
  const wholeRunUs = new Map<string, number>();
  if (pipeline) {
    const acked = pipeline.acked - pipelineAckedBefore;
    for (const p of pipelineServers) {
      const cpuS = (processCpuSeconds(p.pid) ?? Number.NaN) - (wholeRun.get(p.name) ?? Number.NaN);
      wholeRunUs.set(p.name, (cpuS * 1e6) / acked);
    }
  }

  // ---- medians ----
  const stats = targets.map((t) => {
    const rs = rounds.filter((r) => r.target === t.key);
    const names = rs[0]?.cpu.map((c) => c.name) ?? [];
    const tsdbRounds = rs.flatMap((r) => (r.tsdb ? [r.tsdb] : []));
    return {
      key: t.key,
      rate: median(rs.map((r) => r.rate)),
      min: Math.min(...rs.map((r) => r.rate)),
      max: Math.max(...rs.map((r) => r.rate)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      shed: rs.reduce((n, r) => n + r.result.shed, 0),
      unacked: rs.reduce((n, r) => n + r.result.unacked + r.result.disconnects, 0),
      lagMaxMs: Math.max(...rs.map((r) => r.result.lagMaxMs)),
      cpu: names.map((name) => {
        const of = (r: Round) => r.cpu.find((c) => c.name === name);
        return {
          name,
          usPerMsg: median(rs.map((r) => of(r)?.usPerMsg ?? Number.NaN)),
          percent: median(rs.map((r) => of(r)?.percent ?? Number.NaN)),
        };
      }),
      serverUsPerMsg: median(rs.map((r) => r.serverUsPerMsg)),
      machineBusyPercent: median(rs.map((r) => r.machineBusyPercent)),
      oursPercent: median(rs.map((r) => r.oursPercent)),
      tsdbSeconds: median(tsdbRounds.map((x) => (x.complete ? x.seconds : Number.NaN))),
      tsdbMaxSeconds: Math.max(...tsdbRounds.map((x) => (x.complete ? x.seconds : Number.POSITIVE_INFINITY))),
      tsdbMissing: rs.reduce(
        (n, r) => n + (r.tsdb ? Math.max(0, r.result.ackedTotal - r.tsdb.readable) : 0),
        0,
      ),
      heartbeatGapS: Math.max(0, ...rs.map((r) => r.lease?.heartbeatGapS ?? 0)),
      gauge: Math.max(...rs.map((r) => r.lease?.gauge ?? Number.NaN)),
      natsUsPerMsg: median(
        rs.map((r) => r.cpu.find((c) => c.name === 'nats-server')?.usPerMsg ?? Number.NaN),
      ),
    };
  });
  const date = started.toISOString().slice(0, 10);
  console.log(
    `\nmedians over ${o.rounds} rounds (${date}; nproc ${availableParallelism()}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ` +
      `Node ${process.version}, nats-server ${natsVersion}, VictoriaMetrics ${victoriaMetricsVersion()}; ` +
      'every process shares the cores, with whatever else the machine runs):',
  );
  for (const s of stats) {
    console.log(
      `  ${s.key.padEnd(12)} ${int(s.rate).padStart(7)} acked msg/s (${int(s.min)}–${int(s.max)}) of ` +
        `${int(o.devices * o.rate)} offered  p50 ${ms(s.p50)} ms  p99 ${ms(s.p99)} ms  | shed ${s.shed}, ` +
        `unacked + disconnects ${s.unacked}, generator lag max ${ms(s.lagMaxMs)} ms` +
        `\n${''.padEnd(15)}CPU µs/msg: ${s.cpu.map((c) => `${c.name} ${us(c.usPerMsg)} (${Math.round(c.percent)}%)`).join(', ')}` +
        ` | server side ${us(s.serverUsPerMsg)} | machine busy ${Math.round(s.machineBusyPercent)}%, ` +
        `these processes ${Math.round(s.oursPercent)}%` +
        (s.key === 'pipeline'
          ? `\n${''.padEnd(15)}TSDB: all readable ${sec(s.tsdbSeconds)} after the load stopped (median; worst ` +
            `${Number.isFinite(s.tsdbMaxSeconds) ? sec(s.tsdbMaxSeconds) : 'not within the wait'}), ${int(s.tsdbMissing)} missing; ` +
            `longest lease heartbeat gap ${sec(s.heartbeatGapS)}, ${LEASE_GAP_GAUGE} ` +
            `${Number.isNaN(s.gauge) ? 'not exposed' : sec(s.gauge)}` +
            leaseVerdict(Math.max(s.heartbeatGapS, s.gauge || 0)) +
            `\n${''.padEnd(15)}whole run (between rounds included, ÷ its acks): ` +
            [...wholeRunUs].map(([name, v]) => `${name} ${us(v)}`).join(', ') +
            ' µs/msg'
          : ''),
    );
  }
  const p = stats.find((s) => s.key === 'pipeline');
  const l = stats.find((s) => s.key === 'listener');
  const n = stats.find((s) => s.key === 'no-processor');
  if (p && l) {
    console.log(`  ratio pipeline / listener, acked msg/s: ${ratio(p.rate, l.rate)}`);
    console.log(
      `  ratio pipeline / listener, server-side CPU per message (gateway + nats-server + processor + ` +
        `VictoriaMetrics vs nats-server): ${ratio(p.serverUsPerMsg, l.serverUsPerMsg)} ` +
        `(${us(p.serverUsPerMsg)} vs ${us(l.serverUsPerMsg)} µs)`,
    );
  }
  if (p && n) {
    console.log(
      `  nats-server CPU with processors / without: ${ratio(p.natsUsPerMsg, n.natsUsPerMsg)} ` +
        `(${us(p.natsUsPerMsg)} vs ${us(n.natsUsPerMsg)} µs/msg)`,
    );
  }
  const others = stats.map((s) => s.machineBusyPercent - s.oursPercent);
  if (Math.max(...others) > 50) {
    console.log(
      `  note: other work on the machine took ${others.map((x) => `${Math.round(x)}%`).join(' / ')} of a core ` +
        `(${stats.map((s) => s.key).join(' / ')} rounds, medians): throughput and latency are ` +
        "then as much its figures as the targets'; CPU per message is the steadier figure",
    );
  }
  if (p && p.lagMaxMs > 100) {
    console.log(
      `  note: the generator fell up to ${ms(p.lagMaxMs)} ms behind its schedule (the cores were full)`,
    );
  }

  // ---- every PUBACK must stand for a stored message, and every stored reading for a TSDB point ----
  console.log('');
  for (const t of targets) {
    if (t.key === 'listener') {
      const stored = (await (await jetstreamManager(t.nc)).streams.info(MQTT_MSGS_STREAM)).state.messages;
      console.log(
        `check: ${MQTT_MSGS_STREAM} holds ${stored} messages, nats-server sent ${t.acked} PUBACKs ` +
          (stored === t.acked ? 'OK' : 'MISMATCH'),
      );
      continue;
    }
    const stored = await checkTelemetryStored(t.nc, t.acked, `the ${t.key} gateway`);
    if (t.tsdb) {
      // A processor behind (the last round's readings not all readable yet) gets the same wait again.
      const deadline = Date.now() + o.tsdbWaitSeconds * 1000;
      let raw = 0;
      for (;;) {
        checkInterrupted();
        raw = await countReadings(t.tsdb, started.getTime() - 60_000, Date.now() + 60_000);
        if (raw >= stored || Date.now() > deadline) break;
        await sleep(TSDB_POLL_MS);
      }
      console.log(
        `check: VictoriaMetrics holds ${raw} raw readings of the ${stored} in TELEMETRY ` +
          (raw === stored ? 'OK' : `MISMATCH (${stored - raw} missing)`),
      );
    }
  }
}

try {
  await main();
} catch (err) {
  if (!isInterrupted()) {
    console.error(`pipeline bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
} finally {
  if (!isInterrupted()) await cleanup();
}
