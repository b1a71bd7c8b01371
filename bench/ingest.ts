import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { telemetryTopic } from '../contract/topics.js';
import type { NatsServer } from '../test/kit/nats-server.js';
import { checkTelemetryStored } from './checks.js';
import { isRunning, keepTail, killQuietly, terminate } from './child-process.js';
import { CpuSampler, perMessage } from './cpu.js';
import { formatSummary, newestProfile } from './cpuprofile-top.js';
import { freePort, startGatewayProcess } from './gateway-process.js';
import { cleanup, hold, isInterrupted, stopOnExit } from './lifecycle.js';
import {
  type BenchDevice,
  Fleet,
  type OpenLoopResult,
  type RoundResult,
  runRound,
  selfCheck,
  telemetryPayload,
} from './mqtt-load.js';
import { heldMqttListener, heldNatsConnection, heldNatsServer, MQTT_MSGS_STREAM } from './nats.js';
import { listOption, numberOption } from './options.js';
import { provision } from './provision.js';
import { median, roundFigures } from './stats.js';

/**
 * `npm run bench:ingest`: MQTT QoS 1 ingest, our gateway against nats-server's own MQTT listener,
 * both acknowledging a PUBLISH only once JetStream has stored it. Rounds alternate between the two
 * targets so that the machine's noise spreads over both; medians are reported.
 *
 * nats-server's listener stores one message per connection at a time, and acknowledges only once it
 * is stored; see heldMqttListener (bench/nats.ts) for the consumer that makes it store at all.
 */
const HELP = `usage: npm run bench:ingest -- [options]
  --clients N          MQTT connections (default 100)
  --inflight K         QoS 1 publishes in flight per connection (default 32)
  --seconds S          length of each timed round (default 5)
  --rounds R           timed rounds per target, interleaved A,B,A,B,... (default 3)
  --warmup-seconds S   untimed round per target first (default 2)
  --payload-bytes B    grow the ~102-byte payload to about B bytes with extra metrics
  --targets LIST       gateway,nats (default both), and the floors of any Node front end
                       (bench/relay-floor.ts): relay (mqtt-packet parse, the gateway's NATS hop,
                       nothing else) and echo (mqtt-packet parse, PUBACK at once, no NATS)
  --workers LIST       GATEWAY_WORKERS of the gateway, one target per value, interleaved with the
                       others: 1,2 compares one process with two workers in the same run
                       (default: the gateway's own default, the cores Node may use)
  --baseline DIR       one more gateway target, run from another checkout (a git worktree of the
                       commit to compare with, its node_modules installed or linked), with the
                       first --workers value: old and new code under the same noise
  --no-interest        leave nats-server's $MQTT_msgs without a consumer; being an interest-retention
                       stream, it then acknowledges without storing anything (for comparison only:
                       by default the bench attaches a consumer so nats-server really stores)
  --profile DIR        run the gateway with --cpu-prof into DIR and summarise the profile
  --drain-seconds S    wait this long for outstanding PUBACKs after a round (default 10)

The fleet shape, after the chatty rounds: many devices, each its own connection, a few QoS 1
publishes a second each (open loop), where per-message overheads dominate. Reported: CPU per
acknowledged message of the gateway with its nats-server against nats-server's listener.
  --fleet-devices N    devices of the fleet phase, 0 for none (default 2000)
  --fleet-rate R       publishes a second per device (default 4)
  --fleet-seconds S    length of each fleet round (default 20); as many rounds as --rounds`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOST = '127.0.0.1';
const CONNECT_TIMEOUT_MS = 60_000;
/** CONNECTs outstanding at once while a fleet connects: the gateway checks secrets a few at a time. */
const FLEET_CONNECT_CONCURRENCY = 64;
/** A fleet device's unacknowledged publishes at most: a send finding none free is shed and counted. */
const FLEET_INFLIGHT = 16;
/** Pause between rounds so the previous target's leftovers (GC, store flushes) stay out of the next window. */
const SETTLE_MS = 1_000;

const TARGET_KEYS = ['gateway', 'nats', 'relay', 'echo'] as const;
type TargetKey = (typeof TARGET_KEYS)[number];

interface Options {
  clients: number;
  inflight: number;
  seconds: number;
  rounds: number;
  warmupSeconds: number;
  payloadBytes: number;
  targets: TargetKey[];
  workers: number[];
  interest: boolean;
  profileDir: string | undefined;
  drainSeconds: number;
  baseline: string | undefined;
  fleetDevices: number;
  fleetRate: number;
  fleetSeconds: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '100' },
      inflight: { type: 'string', default: '32' },
      seconds: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
      'warmup-seconds': { type: 'string', default: '2' },
      'payload-bytes': { type: 'string', default: '0' },
      targets: { type: 'string', default: 'gateway,nats' },
      workers: { type: 'string', default: String(availableParallelism()) },
      'no-interest': { type: 'boolean', default: false },
      profile: { type: 'string' },
      'drain-seconds': { type: 'string', default: '10' },
      baseline: { type: 'string' },
      'fleet-devices': { type: 'string', default: '2000' },
      'fleet-rate': { type: 'string', default: '4' },
      'fleet-seconds': { type: 'string', default: '20' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const num = numberOption;
  return {
    clients: num('clients', values.clients, 1, 9_999),
    // Packet ids are 16 bits and 0 is not one [MQTT-2.3.1-1].
    inflight: num('inflight', values.inflight, 1, 65_535),
    seconds: num('seconds', values.seconds, 0.5, 3_600, false),
    rounds: num('rounds', values.rounds, 1, 100),
    warmupSeconds: num('warmup-seconds', values['warmup-seconds'], 0, 600, false),
    // Padding adds metrics, and the device contract allows 256 of at most 64 characters each.
    payloadBytes: num('payload-bytes', values['payload-bytes'], 0, 14_000),
    targets: listOption('targets', values.targets, TARGET_KEYS),
    workers: [...new Set(values.workers.split(',').map((w) => num('workers', w.trim(), 1, 64)))],
    interest: !values['no-interest'],
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    drainSeconds: num('drain-seconds', values['drain-seconds'], 0, 600, false),
    baseline: values.baseline === undefined ? undefined : resolve(values.baseline),
    // Each device is a socket of this process and of the target; the fd limit is the bound.
    fleetDevices: num('fleet-devices', values['fleet-devices'], 0, 9_999),
    fleetRate: num('fleet-rate', values['fleet-rate'], 0.1, 1_000, false),
    fleetSeconds: num('fleet-seconds', values['fleet-seconds'], 1, 3_600, false),
  };
}

// ---- lifecycle: everything started is stopped on the way out, whatever the way out is ----

stopOnExit('the gateway and the servers');

const natsServer = (name: string): Promise<NatsServer> => heldNatsServer({ serverName: name });

const natsConnection = (server: NatsServer, name: string): Promise<NatsConnection> =>
  heldNatsConnection(server.url, name);

// ---- figures ----

const int = (n: number) => (Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US'));
const ms = (n: number) =>
  Number.isNaN(n) ? '–' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);

interface Round {
  target: TargetKey;
  /** The target's name in the output: nats-server, or the gateway with its worker count. */
  label: string;
  index: number;
  rate: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
  disconnects: number;
  unacked: number;
  cpu: { name: string; percent: number }[];
  result: RoundResult;
}

function summariseRound(t: Target, index: number, result: RoundResult): Round {
  return {
    target: t.key,
    label: t.label,
    index,
    ...roundFigures(result),
    errors: [...result.errors.values()].reduce((a, b) => a + b, 0),
    disconnects: result.disconnects,
    unacked: result.unacked,
    cpu: t.sampler.usage(),
    result,
  };
}

function roundLine(label: string, r: Round): string {
  const cpu = r.cpu.map((c) => `${c.name} ${Math.round(c.percent)}%`).join(', ');
  const errs = [...r.result.errors].map(([what, n]) => `${n}× ${what}`).join('; ');
  return (
    `${label.padEnd(10)} ${r.label.padEnd(12)} ${int(r.rate).padStart(7)} acked msg/s` +
    `  p50 ${ms(r.p50).padStart(5)} ms  p99 ${ms(r.p99).padStart(5)} ms  max ${ms(r.max).padStart(5)} ms` +
    `  | errors ${r.errors}, disconnects ${r.disconnects}, unacked ${r.unacked}` +
    (cpu ? `  | cpu ${cpu}` : '') +
    (errs ? `\n${''.padEnd(11)}errors: ${errs}` : '')
  );
}

const gatewayLabel = (workers: number) => `gateway ×${workers}`;
const NOT_THE_TARGET = new Set(["gateway's nats-server", "relay's nats-server", 'loadgen']);
/** Targets that are Node front ends (ours, or the floors under any), measured against nats-server's listener. */
const isNodeFrontEnd = (key: TargetKey) => key !== 'nats';

// ---- the run ----

interface Target {
  key: TargetKey;
  label: string;
  /** The gateway's GATEWAY_WORKERS. */
  workers?: number;
  /** Where its stream is, for the check that every PUBACK stands for a stored message (echo: none). */
  nc: NatsConnection | undefined;
  port: number;
  devices: BenchDevice[];
  sampler: CpuSampler;
  acked: number;
  /** The fleet phase's devices (registered in the gateway's registry along with `devices`). */
  fleetDevices: BenchDevice[];
}

async function main(): Promise<void> {
  const o = options();
  const started = new Date();
  const payloadSize = Buffer.byteLength(telemetryPayload(Date.now(), o.payloadBytes));
  selfCheck(telemetryTopic('bench-0001'), o.payloadBytes);
  console.log(
    `ingest bench: ${o.clients} clients × ${o.inflight} QoS 1 in flight, ${payloadSize}-byte payloads, ` +
      `${o.warmupSeconds} s warm-up then ${o.rounds} × ${o.seconds} s per target, targets ${o.targets.join(', ')}, gateway GATEWAY_WORKERS ${o.workers.join(', ')}`,
  );

  const ids = Array.from({ length: o.clients }, (_, i) => `bench-${String(i + 1).padStart(4, '0')}`);
  const fleetIds = Array.from(
    { length: o.fleetDevices },
    (_, i) => `fleet-${String(i + 1).padStart(5, '0')}`,
  );
  const targets: Target[] = [];
  let mqttNc: NatsConnection | undefined;
  let natsVersion = 'unknown';

  // One gateway (and its own nats-server) per --workers value, and the baseline's, all up at once:
  // the rounds interleave.
  const gatewayRuns = o.targets.includes('gateway')
    ? [
        ...o.workers.map((workers) => ({ workers, cwd: REPO_ROOT, label: gatewayLabel(workers) })),
        ...(o.baseline === undefined
          ? []
          : [{ workers: o.workers[0]!, cwd: o.baseline, label: `baseline ×${o.workers[0]}` }]),
      ]
    : [];
  for (const [index, { workers, cwd, label }] of gatewayRuns.entries()) {
    const gatewayNats = await natsServer(`bench_gateway_${index + 1}`);
    const gatewayNc = await natsConnection(gatewayNats, 'bench provisioning');
    natsVersion = gatewayNc.info?.version ?? natsVersion;
    const devices = ids.map((id) => ({ id, username: id, password: `secret-${id}`, nextSeq: 0 }));
    const fleetDevices = fleetIds.map((id) => ({ id, username: id, password: `secret-${id}`, nextSeq: 0 }));
    const t0 = performance.now();
    await provision(gatewayNc, [...devices, ...fleetDevices]);
    console.log(
      `${label}: provisioned ${devices.length + fleetDevices.length} devices in ${ms(performance.now() - t0)} ms`,
    );
    let profileSince = 0;
    const nodeArgs: string[] = [];
    if (o.profileDir !== undefined) {
      await mkdir(o.profileDir, { recursive: true });
      nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${o.profileDir}`);
      console.log(
        `profiling the gateway into ${o.profileDir}: its figures are not comparable with unprofiled runs`,
      );
      profileSince = Date.now();
    }
    const gw = await startGatewayProcess({
      cwd,
      natsUrl: gatewayNats.url,
      nodeArgs,
      // Saturation needs more than a device's default allowance (100/s, 16 KiB/s) from each client.
      env: {
        DEVICE_MAX_MSGS_PER_SEC: process.env.DEVICE_MAX_MSGS_PER_SEC ?? '0',
        DEVICE_MAX_BYTES_PER_SEC: process.env.DEVICE_MAX_BYTES_PER_SEC ?? '0',
        GATEWAY_WORKERS: String(workers),
      },
    });
    hold(
      label,
      async () => {
        await gw.stop();
        if (o.profileDir !== undefined) {
          const file = newestProfile(o.profileDir, profileSince);
          console.log(file ? `\n${formatSummary(file)}` : `\nno .cpuprofile found in ${o.profileDir}`);
        }
      },
      () => gw.kill(),
    );
    const g = gatewayNats;
    targets.push({
      key: 'gateway',
      label,
      workers,
      nc: gatewayNc,
      port: gw.mqttPort,
      devices,
      fleetDevices,
      // With workers: the primary (it accepts the connections and hands them over) and each worker.
      sampler: new CpuSampler(
        () =>
          new Map([
            [workers === 1 ? 'gateway' : 'primary', gw.pid],
            ...gw.workerPids().map((pid, i) => [`worker ${i + 1}`, pid] as const),
            ["gateway's nats-server", g.pid],
            ['loadgen', process.pid],
          ]),
      ),
      acked: 0,
    });
  }

  // The floors under any Node front end: each on its own nats-server (relay) or none (echo).
  for (const mode of (['relay', 'echo'] as const).filter((m) => o.targets.includes(m))) {
    const relayNats = mode === 'relay' ? await natsServer('bench_relay') : undefined;
    const relayNc =
      relayNats === undefined ? undefined : await natsConnection(relayNats, 'bench relay check');
    natsVersion = relayNc?.info?.version ?? natsVersion;
    const relay = await startRelayFloor(mode, relayNats?.url);
    hold(
      mode,
      () => relay.stop(),
      () => relay.kill(),
    );
    const anyone = (id: string) => ({ id, username: undefined, password: undefined, nextSeq: 0 });
    targets.push({
      key: mode,
      label: mode,
      nc: relayNc,
      port: relay.port,
      devices: ids.map(anyone),
      fleetDevices: fleetIds.map(anyone),
      sampler: new CpuSampler(
        () =>
          new Map([
            [mode, relay.pid],
            ...(relayNats === undefined ? [] : [["relay's nats-server", relayNats.pid] as const]),
            ['loadgen', process.pid],
          ]),
      ),
      acked: 0,
    });
  }

  if (o.targets.includes('nats')) {
    const listener = await heldMqttListener('bench_mqtt', {
      interest: o.interest,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
    });
    const server = listener.server;
    mqttNc = listener.nc;
    natsVersion = mqttNc.info?.version ?? natsVersion;
    targets.push({
      key: 'nats',
      label: 'nats-server',
      nc: mqttNc,
      port: listener.mqttPort,
      devices: ids.map((id) => ({ id, username: undefined, password: undefined, nextSeq: 0 })),
      fleetDevices: fleetIds.map((id) => ({ id, username: undefined, password: undefined, nextSeq: 0 })),
      sampler: new CpuSampler(
        () =>
          new Map([
            ['nats-server', server.pid],
            ['loadgen', process.pid],
          ]),
      ),
      acked: 0,
    });
  }

  const round = (t: Target, seconds: number) =>
    runRound({
      host: HOST,
      port: t.port,
      devices: t.devices,
      inflight: o.inflight,
      seconds,
      payloadBytes: o.payloadBytes,
      topic: telemetryTopic,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      drainTimeoutMs: o.drainSeconds * 1000,
      onStart: () => t.sampler.start(),
      onEnd: () => t.sampler.stop(),
    });

  if (o.warmupSeconds > 0) {
    for (const t of targets) {
      if (isInterrupted()) return;
      const result = await round(t, o.warmupSeconds);
      if (isInterrupted()) return;
      t.acked += result.ackedTotal;
      const r = summariseRound(t, 0, result);
      console.log(`${roundLine('warm-up', r)}  (connect ${ms(result.connectMs)} ms)`);
      await sleep(SETTLE_MS);
    }
  }

  const rounds: Round[] = [];
  for (let i = 1; i <= o.rounds; i++) {
    for (const t of targets) {
      if (isInterrupted()) return;
      const result = await round(t, o.seconds);
      if (isInterrupted()) return;
      t.acked += result.ackedTotal;
      const r = summariseRound(t, i, result);
      rounds.push(r);
      console.log(roundLine(`round ${i}/${o.rounds}`, r));
      await sleep(SETTLE_MS);
    }
  }

  // ---- medians and the README table ----
  const perTarget = targets.map((t) => {
    const rs = rounds.filter((r) => r.label === t.label);
    const cpuNames = rs[0]?.cpu.map((c) => c.name) ?? [];
    return {
      key: t.key,
      label: t.label,
      workers: t.workers,
      rate: median(rs.map((r) => r.rate)),
      min: Math.min(...rs.map((r) => r.rate)),
      max: Math.max(...rs.map((r) => r.rate)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      errors: rs.reduce((n, r) => n + r.errors + r.disconnects + r.unacked, 0),
      // CPU of the target's own processes (the gateway's primary and workers, or nats-server; not the
      // gateway's nats-server, not the load generator) per acknowledged message: less sensitive than
      // msg/s to what else runs on the machine, since a starved process also uses less CPU.
      cpuUsPerMsg: median(
        rs.map(
          (r) =>
            (r.cpu.filter((c) => !NOT_THE_TARGET.has(c.name)).reduce((a, c) => a + c.percent, 0) /
              100 /
              r.rate) *
            1e6,
        ),
      ),
      cpu: cpuNames.map((name) => ({
        name,
        percent: median(rs.map((r) => r.cpu.find((c) => c.name === name)?.percent ?? Number.NaN)),
      })),
    };
  });
  console.log('\nmedians:');
  for (const p of perTarget) {
    console.log(
      `  ${p.label.padEnd(12)} ${int(p.rate).padStart(7)} acked msg/s (${int(p.min)}–${int(p.max)})` +
        `  p50 ${ms(p.p50)} ms  p99 ${ms(p.p99)} ms  ${int(p.cpuUsPerMsg)} µs CPU/msg  | cpu ${p.cpu.map((c) => `${c.name} ${Math.round(c.percent)}%`).join(', ')}`,
    );
  }
  const gateways = perTarget.filter((p) => p.key === 'gateway');
  const theirs = perTarget.find((p) => p.key === 'nats');
  // Each Node front end against nats-server, and each further worker count against the first.
  const ratios = [
    ...(theirs
      ? perTarget
          .filter((p) => isNodeFrontEnd(p.key))
          .map((g) => [`${g.label} / nats-server`, g.rate / theirs.rate] as const)
      : []),
    ...gateways
      .slice(1)
      .map((g) => [`${g.label} / ${gateways[0]!.label}`, g.rate / gateways[0]!.rate] as const),
    // Round by round (the two ran seconds apart, under much the same noise), then the median.
    ...gateways.slice(1).map((g) => {
      const first = gateways[0]!.label;
      const each = rounds
        .filter((r) => r.label === g.label)
        .map(
          (r) => r.rate / (rounds.find((f) => f.label === first && f.index === r.index)?.rate ?? Number.NaN),
        );
      return [`${g.label} / ${first}, median of each round's`, median(each)] as const;
    }),
  ];
  for (const [what, ratio] of ratios) console.log(`  throughput ratio ${what}: ${ratio.toFixed(2)}×`);

  const date = started.toISOString().slice(0, 10);
  const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const describe: Record<TargetKey, string> = {
    relay:
      'floor: Node, mqtt-packet parse, the gateway’s JetStreamPublisher → `TELEMETRY` (file), PUBACK after the PubAck; nothing else',
    echo: 'floor: Node, mqtt-packet parse, PUBACK at once (no NATS)',
    gateway:
      'gateway (GATEWAY_WORKERS={workers}): aedes + registry auth + payload validation → JetStream `TELEMETRY` (file), PUBACK after the PubAck',
    nats: o.interest
      ? 'nats-server MQTT listener → JetStream `$MQTT_msgs` (file), PUBACK after the store; a durable consumer is attached so messages are kept'
      : 'nats-server MQTT listener, `$MQTT_msgs` without a consumer: PUBACK after JetStream **skipped** the message (nothing stored)',
  };
  const table = [
    `Ingest, measured ${date} with \`npm run bench:ingest\`: ${o.clients} MQTT 3.1.1 clients × ${o.inflight} QoS 1 publishes in flight, ` +
      `${payloadSize}-byte JSON payloads, ${o.rounds} round${o.rounds === 1 ? '' : 's'} of ${o.seconds} s per target, interleaved, medians. ` +
      `Machine: nproc ${availableParallelism()} (${cpuModel}), Node ${process.version}, nats-server ${natsVersion}; ` +
      'load generator, gateway and nats-server share the cores.',
    '',
    '| target | acked msg/s (min–max) | p50 publish → PUBACK | p99 publish → PUBACK | CPU µs per message | errors, disconnects, unacked |',
    '|---|---|---|---|---|---|',
    ...perTarget.map(
      (p) =>
        `| ${describe[p.key].replace('{workers}', String(p.workers))} | ${int(p.rate)} (${int(p.min)}–${int(p.max)}) | ${ms(p.p50)} ms | ${ms(p.p99)} ms | ${int(p.cpuUsPerMsg)} | ${p.errors} |`,
    ),
    ...ratios.map(([what, ratio]) => `| ratio ${what} | ${ratio.toFixed(2)}× | | | | |`),
  ];
  console.log(`\n${table.join('\n')}\n`);

  if (o.fleetDevices > 0) await fleetPhase(o, targets);

  // ---- every PUBACK must stand for a stored message ----
  for (const t of targets.filter((t) => t.key === 'gateway' || t.key === 'relay')) {
    if (t.nc !== undefined) await checkTelemetryStored(t.nc, t.acked, t.label);
  }
  const natsTarget = targets.find((t) => t.key === 'nats');
  if (natsTarget && mqttNc) {
    const stored = (await (await jetstreamManager(mqttNc)).streams.info(MQTT_MSGS_STREAM)).state.messages;
    const verdict = !o.interest
      ? '(no consumer: nothing is kept, as expected)'
      : stored === natsTarget.acked
        ? 'OK'
        : 'MISMATCH';
    console.log(
      `check: ${MQTT_MSGS_STREAM} holds ${stored} messages, nats-server sent ${natsTarget.acked} PUBACKs ${verdict}`,
    );
  }
}

// ---- the fleet shape ----

interface FleetRound {
  label: string;
  index: number;
  result: OpenLoopResult;
  rate: number;
  p50: number;
  p99: number;
  /** µs of CPU per acknowledged message, per process. */
  cpu: { name: string; usPerMsg: number; percent: number }[];
  /** The target's side: the gateway's processes and its nats-server, or nats-server's listener. */
  serverUsPerMsg: number;
}

/**
 * Issue 13's figure: at a fleet's shape (thousands of connections, a few publishes a second each, so
 * about one message per socket read), the CPU per acknowledged message of the gateway and its
 * nats-server against nats-server's own MQTT listener, same load generator, rounds interleaved, order
 * rotated each round, medians. Each target's fleet connects once, after the chatty rounds.
 */
async function fleetPhase(o: Options, targets: Target[]): Promise<void> {
  console.log(
    `\nfleet shape: ${int(o.fleetDevices)} devices, each its own connection, × ${o.fleetRate} QoS 1 msg/s ` +
      `(${int(o.fleetDevices * o.fleetRate)} msg/s offered), at most ${FLEET_INFLIGHT} in flight each; ` +
      `${o.warmupSeconds} s warm-up then ${o.rounds} × ${o.fleetSeconds} s per target`,
  );
  const fleets = new Map<Target, Fleet>();
  for (const t of targets) {
    if (isInterrupted()) return;
    const fleet = await Fleet.connect({
      host: HOST,
      port: t.port,
      devices: t.fleetDevices,
      inflight: FLEET_INFLIGHT,
      payloadBytes: o.payloadBytes,
      topic: telemetryTopic,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      connectConcurrency: FLEET_CONNECT_CONCURRENCY,
    });
    hold(
      `${t.label} fleet`,
      async () => fleet.destroy(),
      () => fleet.destroy(),
    );
    fleets.set(t, fleet);
    const errs = [...fleet.connectErrors].map(([what, n]) => `${n}× ${what}`).join('; ');
    console.log(
      `${t.label}: ${fleet.size} of ${t.fleetDevices.length} devices connected in ${ms(fleet.connectMs)} ms` +
        (errs ? ` (failed: ${errs})` : ''),
    );
  }

  const run = async (t: Target, index: number, seconds: number): Promise<FleetRound> => {
    const result = await fleets.get(t)!.runOpenLoop({
      seconds,
      perDeviceHz: o.fleetRate,
      drainTimeoutMs: o.drainSeconds * 1000,
      onStart: () => t.sampler.start(),
      onEnd: () => t.sampler.stop(),
    });
    t.acked += result.ackedTotal;
    const { rate, p50, p99 } = roundFigures(result);
    const cpu = perMessage(t.sampler.usage(), rate);
    return {
      label: t.label,
      index,
      result,
      rate,
      p50,
      p99,
      cpu,
      serverUsPerMsg: cpu.filter((c) => c.name !== 'loadgen').reduce((n, c) => n + c.usPerMsg, 0),
    };
  };
  const line = (label: string, r: FleetRound) =>
    `${label.padEnd(10)} ${r.label.padEnd(12)} ${int(r.rate).padStart(7)} acked msg/s (shed ${r.result.shed}, ` +
    `unacked ${r.result.unacked}, disconnects ${r.result.disconnects})  p50 ${ms(r.p50)} ms  p99 ${ms(r.p99)} ms` +
    `  | CPU µs/msg: ${r.cpu.map((c) => `${c.name} ${int(c.usPerMsg)} (${Math.round(c.percent)}%)`).join(', ')}` +
    `  | server side ${int(r.serverUsPerMsg)}`;

  if (o.warmupSeconds > 0)
    for (const t of targets) {
      if (isInterrupted()) return;
      console.log(line('warm-up', await run(t, 0, o.warmupSeconds)));
      await sleep(SETTLE_MS);
    }
  const rounds: FleetRound[] = [];
  for (let i = 1; i <= o.rounds; i++) {
    // Rotated, so that no target always follows the same one.
    const order = targets.map((_, k) => targets[(k + i - 1) % targets.length]!);
    for (const t of order) {
      if (isInterrupted()) return;
      const r = await run(t, i, o.fleetSeconds);
      rounds.push(r);
      console.log(line(`round ${i}/${o.rounds}`, r));
      await sleep(SETTLE_MS);
    }
  }
  for (const fleet of fleets.values()) await fleet.leave();

  const per = targets.map((t) => {
    const rs = rounds.filter((r) => r.label === t.label);
    return {
      key: t.key,
      label: t.label,
      rate: median(rs.map((r) => r.rate)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      serverUsPerMsg: median(rs.map((r) => r.serverUsPerMsg)),
      cpu: (rs[0]?.cpu ?? []).map((c) => ({
        name: c.name,
        usPerMsg: median(rs.map((r) => r.cpu.find((x) => x.name === c.name)?.usPerMsg ?? Number.NaN)),
      })),
      lost: rs.reduce((n, r) => n + r.result.unacked + r.result.disconnects, 0),
    };
  });
  const listener = per.find((p) => p.key === 'nats');
  console.log('\nfleet shape, medians:');
  for (const p of per)
    console.log(
      `  ${p.label.padEnd(12)} ${int(p.rate).padStart(7)} acked msg/s  p50 ${ms(p.p50)} ms  p99 ${ms(p.p99)} ms` +
        `  | CPU µs/msg: ${p.cpu.map((c) => `${c.name} ${int(c.usPerMsg)}`).join(', ')} | server side ${int(p.serverUsPerMsg)}` +
        (p.lost > 0 ? `  | ${p.lost} unacknowledged or disconnected` : ''),
    );
  const gatewayStats = per.filter((p) => p.key === 'gateway');
  const frontEnds = per.filter((p) => isNodeFrontEnd(p.key));
  for (const g of gatewayStats.slice(1)) {
    const first = gatewayStats[0]!.label;
    const each = rounds
      .filter((r) => r.label === g.label)
      .map(
        (r) =>
          r.serverUsPerMsg /
          (rounds.find((f) => f.label === first && f.index === r.index)?.serverUsPerMsg ?? Number.NaN),
      );
    console.log(
      `  CPU per acknowledged message, ${g.label} / ${first}, each with its nats-server: ` +
        `${median(each).toFixed(2)}× median of each round's (${each.map((x) => x.toFixed(2)).join(', ')})`,
    );
  }
  if (listener === undefined) return;
  for (const g of frontEnds) {
    // Round by round too: the two ran seconds apart, under much the same noise.
    const each = rounds
      .filter((r) => r.label === g.label)
      .map(
        (r) =>
          r.serverUsPerMsg /
          (rounds.find((l) => l.label === listener.label && l.index === r.index)?.serverUsPerMsg ??
            Number.NaN),
      );
    console.log(
      `  CPU per acknowledged message, ${g.label}${g.key === 'echo' ? '' : ' + its nats-server'} / nats-server's listener: ` +
        `${(g.serverUsPerMsg / listener.serverUsPerMsg).toFixed(2)}× of the medians, ` +
        `${median(each).toFixed(2)}× median of each round's (${each.map((x) => x.toFixed(2)).join(', ')})` +
        (g.key === 'gateway' ? '; asked ≤ 1.25×' : ''),
    );
  }
}

/** bench/relay-floor.ts as its own process, listening on a free port. */
async function startRelayFloor(
  mode: 'relay' | 'echo',
  natsUrl: string | undefined,
): Promise<{ pid: number; port: number; stop(): Promise<void>; kill(): void }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/relay-floor.ts'], {
    cwd: REPO_ROOT,
    env: { ...process.env, MQTT_PORT: String(port), RELAY_MODE: mode, NATS_URL: natsUrl ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = keepTail(child, 40);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not spawn the ${mode} floor`);
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  while (!lines.includes('ready')) {
    if (!isRunning(child) || Date.now() > deadline) {
      killQuietly(pid);
      throw new Error(`the ${mode} floor did not start:\n${lines.join('\n')}`);
    }
    await sleep(50);
  }
  return { pid, port, stop: () => terminate(child, 5_000), kill: () => killQuietly(pid) };
}

try {
  await main();
} catch (err) {
  if (!isInterrupted()) {
    console.error(`ingest bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
} finally {
  if (!isInterrupted()) await cleanup();
}
