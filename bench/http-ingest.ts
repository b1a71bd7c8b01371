import { mkdir } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { availableParallelism, cpus } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ingestPath, telemetryTopic } from '../contract/topics.js';
import { checkTelemetryStored } from './checks.js';
import { CpuSampler } from './cpu.js';
import { formatSummary, newestProfile } from './cpuprofile-top.js';
import { freePort, startGatewayProcess } from './gateway-process.js';
import { cleanup, hold, isInterrupted, stopOnExit } from './lifecycle.js';
import { type BenchDevice, runRound, SEQ_BASE, selfCheck } from './mqtt-load.js';
import { heldNatsConnection, heldNatsServer } from './nats.js';
import { listOption, numberOption } from './options.js';
import { provision } from './provision.js';
import { median, quantile } from './stats.js';

/**
 * `npm run bench:http`: HTTP ingest against the MQTT path of the same gateway, in the same run.
 * Targets take turns round by round (MQTT QoS 1, HTTP single readings, HTTP batches) so the machine's
 * noise spreads over all; medians are reported. The figure that matters is readings stored a second
 * and the gateway's CPU per reading: every answer, PUBACK or HTTP 200, stands for stored readings.
 * HTTP clients are keep-alive (node:http Agent), each device with `--http-concurrency` requests at
 * once, each waiting for its answer before sending the next.
 */
const HELP = `usage: npm run bench:http -- [options]
  --clients N            devices, each one MQTT connection and its HTTP clients (default 50)
  --inflight K           MQTT QoS 1 publishes in flight per connection (default 32)
  --http-concurrency C   HTTP requests at once per device, one keep-alive socket each (default 4)
  --batch B              readings per request of the batch target (default 20)
  --seconds S            length of each timed round (default 5)
  --rounds R             timed rounds per target, interleaved (default 3)
  --warmup-seconds S     untimed round per target first (default 2)
  --targets LIST         mqtt,http,http-batch (default all three)
  --profile DIR          run the gateway with --cpu-prof into DIR and summarise the profile`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOST = '127.0.0.1';
const SETTLE_MS = 1_000;
/** The load generator waits this long for answers outstanding when a window closes. */
const DRAIN_MS = 15_000;

interface Options {
  clients: number;
  inflight: number;
  concurrency: number;
  batch: number;
  seconds: number;
  rounds: number;
  warmupSeconds: number;
  targets: TargetKey[];
  profileDir: string | undefined;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '50' },
      inflight: { type: 'string', default: '32' },
      'http-concurrency': { type: 'string', default: '4' },
      batch: { type: 'string', default: '20' },
      seconds: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
      'warmup-seconds': { type: 'string', default: '2' },
      targets: { type: 'string', default: 'mqtt,http,http-batch' },
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
  return {
    targets: listOption('targets', values.targets, TARGETS),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    clients: num('clients', values.clients, 1, 9_999),
    inflight: num('inflight', values.inflight, 1, 65_535),
    concurrency: num('http-concurrency', values['http-concurrency'], 1, 64),
    batch: num('batch', values.batch, 2, 1_000),
    seconds: num('seconds', values.seconds, 0.5, 3_600, false),
    rounds: num('rounds', values.rounds, 1, 100),
    warmupSeconds: num('warmup-seconds', values['warmup-seconds'], 0, 600, false),
  };
}

stopOnExit('the gateway and nats-server');

const TARGETS = ['mqtt', 'http', 'http-batch'] as const;
type TargetKey = (typeof TARGETS)[number];

interface Window {
  /** Readings stored (or found duplicate) by answers received inside the window. */
  readings: number;
  /** All readings answered stored, window and drain: for the check against the stream. */
  readingsTotal: number;
  seconds: number;
  latenciesMs: number[];
  errors: Map<string, number>;
  cpu: { name: string; percent: number }[];
}

/** One reading as the MQTT bench sends it (bench/mqtt-load.ts telemetryPayload), its seq its own. */
const reading = (device: BenchDevice) =>
  `{"ts":${Date.now()},"seq":${SEQ_BASE + device.nextSeq++},"metrics":{"temperature":21.5,"humidity":40.2,"pressure":1013.2}}`;

/** A timed window of HTTP posts: `batch` readings a request (1: a single reading, not an array). */
async function httpRound(
  port: number,
  devices: readonly BenchDevice[],
  concurrency: number,
  batch: number,
  seconds: number,
  sampler: CpuSampler,
): Promise<Window> {
  const agent = new Agent({ keepAlive: true, maxSockets: devices.length * concurrency });
  const errors = new Map<string, number>();
  const latenciesMs: number[] = [];
  let readings = 0;
  let readingsTotal = 0;
  const error = (what: string) => errors.set(what, (errors.get(what) ?? 0) + 1);
  const post = (device: BenchDevice, auth: string) =>
    new Promise<void>((resolve) => {
      const body =
        batch === 1 ? reading(device) : `[${Array.from({ length: batch }, () => reading(device)).join(',')}]`;
      const sentAt = performance.now();
      const req = request(
        {
          agent,
          host: HOST,
          port,
          method: 'POST',
          path: ingestPath(device.id),
          headers: {
            authorization: auth,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => (text += d));
          res.on('end', () => {
            if (res.statusCode !== 200) error(`HTTP ${res.statusCode}`);
            else {
              const answer = JSON.parse(text) as { stored: number; duplicates: number; rejected: unknown[] };
              if (answer.rejected.length > 0) error('rejected readings');
              const n = answer.stored + answer.duplicates;
              readingsTotal += answer.stored;
              if (performance.now() <= endAt) {
                readings += n;
                latenciesMs.push(performance.now() - sentAt);
              }
            }
            resolve();
          });
        },
      );
      req.on('error', (err) => {
        error(err.message);
        resolve();
      });
      req.end(body);
    });
  let endAt = Number.POSITIVE_INFINITY;
  const startAt = performance.now();
  endAt = startAt + seconds * 1000;
  sampler.start();
  const loops = devices.flatMap((device) => {
    const auth = `Basic ${Buffer.from(`${device.username}:${device.password}`).toString('base64')}`;
    return Array.from({ length: concurrency }, async () => {
      while (performance.now() < endAt && !isInterrupted()) await post(device, auth);
    });
  });
  await sleep(seconds * 1000);
  sampler.stop();
  await Promise.race([Promise.all(loops), sleep(DRAIN_MS)]);
  agent.destroy();
  return { readings, readingsTotal, seconds, latenciesMs, errors, cpu: sampler.usage() };
}

const int = (n: number) => (Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US'));
const ms = (n: number) => (Number.isNaN(n) ? '–' : n < 10 ? n.toFixed(2) : n.toFixed(1));

interface Round {
  target: TargetKey;
  rate: number;
  p50: number;
  p99: number;
  /** The gateway's CPU (not nats-server's, not the load generator's) per stored reading. */
  cpuUsPerReading: number;
  cpu: { name: string; percent: number }[];
  errors: Map<string, number>;
}

function summarise(target: TargetKey, w: Window): Round {
  const sorted = w.latenciesMs.slice().sort((a, b) => a - b);
  const rate = w.readings / w.seconds;
  const gatewayPercent = w.cpu.find((c) => c.name === 'gateway')?.percent ?? Number.NaN;
  return {
    target,
    rate,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    cpuUsPerReading: (gatewayPercent / 100 / rate) * 1e6,
    cpu: w.cpu,
    errors: w.errors,
  };
}

function line(label: string, name: string, r: Round): string {
  const errs = [...r.errors].map(([what, n]) => `${n}× ${what}`).join('; ');
  return (
    `${label.padEnd(10)} ${name.padEnd(22)} ${int(r.rate).padStart(7)} readings/s  ` +
    `p50 ${ms(r.p50).padStart(5)} ms  p99 ${ms(r.p99).padStart(5)} ms  ${int(r.cpuUsPerReading).padStart(4)} µs gateway CPU/reading` +
    `  | cpu ${r.cpu.map((c) => `${c.name} ${Math.round(c.percent)}%`).join(', ')}` +
    (errs ? `  | errors: ${errs}` : '')
  );
}

async function main(): Promise<void> {
  const o = options();
  const started = new Date();
  selfCheck(telemetryTopic('bench-0001'), 0);
  const names: Record<TargetKey, string> = {
    mqtt: `MQTT QoS 1 ×${o.inflight}`,
    http: `HTTP 1 reading ×${o.concurrency}`,
    'http-batch': `HTTP ${o.batch} readings ×${o.concurrency}`,
  };
  console.log(
    `http ingest bench: ${o.clients} devices; ${Object.values(names).join(', ')} per device; ` +
      `${o.warmupSeconds} s warm-up then ${o.rounds} × ${o.seconds} s per target, interleaved`,
  );
  const nats = await heldNatsServer({ serverName: 'bench_http' });
  const nc = await heldNatsConnection(nats.url, 'bench provisioning');
  const devices: BenchDevice[] = Array.from({ length: o.clients }, (_, i) => {
    const id = `bench-${String(i + 1).padStart(4, '0')}`;
    return { id, username: id, password: `secret-${id}`, nextSeq: 0 };
  });
  await provision(nc, devices);
  const httpIngestPort = await freePort();
  const nodeArgs: string[] = [];
  const profileSince = Date.now();
  if (o.profileDir !== undefined) {
    await mkdir(o.profileDir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${o.profileDir}`);
    console.log(
      `profiling the gateway into ${o.profileDir}: its figures are not comparable with unprofiled runs`,
    );
  }
  const gw = await startGatewayProcess({
    cwd: REPO_ROOT,
    natsUrl: nats.url,
    nodeArgs,
    // Saturation needs more than a device's default allowance from each client.
    env: {
      DEVICE_MAX_MSGS_PER_SEC: '0',
      DEVICE_MAX_BYTES_PER_SEC: '0',
      HTTP_INGEST_PORT: String(httpIngestPort),
    },
  });
  hold(
    'gateway',
    async () => {
      await gw.stop();
      if (o.profileDir === undefined) return;
      const file = newestProfile(o.profileDir, profileSince);
      console.log(file ? `\n${formatSummary(file)}` : `\nno .cpuprofile found in ${o.profileDir}`);
    },
    () => gw.kill(),
  );
  const sampler = new CpuSampler(
    () =>
      new Map([
        ['gateway', gw.pid],
        ['nats-server', nats.pid],
        ['loadgen', process.pid],
      ]),
  );
  let storedTotal = 0;
  const round = async (target: TargetKey, seconds: number): Promise<Round> => {
    if (target === 'mqtt') {
      const r = await runRound({
        host: HOST,
        port: gw.mqttPort,
        devices,
        inflight: o.inflight,
        seconds,
        payloadBytes: 0,
        topic: telemetryTopic,
        connectTimeoutMs: 60_000,
        drainTimeoutMs: DRAIN_MS,
        onStart: () => sampler.start(),
        onEnd: () => sampler.stop(),
      });
      storedTotal += r.ackedTotal;
      const errors = new Map(r.errors);
      if (r.unacked > 0) errors.set('unacked', r.unacked);
      return summarise(target, {
        readings: r.ackedInWindow,
        readingsTotal: r.ackedTotal,
        seconds: r.seconds,
        latenciesMs: [...r.latenciesMs],
        errors,
        cpu: sampler.usage(),
      });
    }
    const batch = target === 'http' ? 1 : o.batch;
    const w = await httpRound(httpIngestPort, devices, o.concurrency, batch, seconds, sampler);
    storedTotal += w.readingsTotal;
    return summarise(target, w);
  };

  const targets = o.targets;
  if (o.warmupSeconds > 0)
    for (const t of targets) {
      if (isInterrupted()) return;
      console.log(line('warm-up', names[t], await round(t, o.warmupSeconds)));
      await sleep(SETTLE_MS);
    }
  const rounds: Round[] = [];
  for (let i = 1; i <= o.rounds; i++)
    for (const t of targets) {
      if (isInterrupted()) return;
      const r = await round(t, o.seconds);
      rounds.push(r);
      console.log(line(`round ${i}/${o.rounds}`, names[t], r));
      await sleep(SETTLE_MS);
    }

  const per = targets.map((t) => {
    const rs = rounds.filter((r) => r.target === t);
    return {
      target: t,
      rate: median(rs.map((r) => r.rate)),
      min: Math.min(...rs.map((r) => r.rate)),
      max: Math.max(...rs.map((r) => r.rate)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      cpuUs: median(rs.map((r) => r.cpuUsPerReading)),
      errors: rs.reduce((n, r) => n + [...r.errors.values()].reduce((a, b) => a + b, 0), 0),
    };
  });
  const mqtt = per.find((p) => p.target === 'mqtt');
  const date = started.toISOString().slice(0, 10);
  const table = [
    `HTTP ingest against MQTT, measured ${date} with \`npm run bench:http\`: ${o.clients} devices, one gateway ` +
      `(GATEWAY_WORKERS=1) and its nats-server, ${o.rounds} interleaved rounds of ${o.seconds} s per target, medians. ` +
      `Machine: nproc ${availableParallelism()} (${cpus()[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}; ` +
      'load generator, gateway and nats-server share the cores.',
    '',
    '| target (per device) | readings stored/s (min–max) | p50 answer | p99 answer | gateway CPU µs per reading | vs MQTT: rate, CPU/reading | errors |',
    '|---|---|---|---|---|---|---|',
    ...per.map(
      (p) =>
        `| ${names[p.target]} | ${int(p.rate)} (${int(p.min)}–${int(p.max)}) | ${ms(p.p50)} ms | ${ms(p.p99)} ms | ${int(p.cpuUs)} | ` +
        `${mqtt ? `${(p.rate / mqtt.rate).toFixed(2)}×, ${(p.cpuUs / mqtt.cpuUs).toFixed(2)}×` : '–'} | ${p.errors} |`,
    ),
  ];
  console.log(`\n${table.join('\n')}\n`);
  await checkTelemetryStored(nc, storedTotal, 'the gateway (PUBACKs and HTTP `stored`)');
}

try {
  await main();
} catch (err) {
  if (!isInterrupted()) {
    console.error(`http ingest bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
} finally {
  if (!isInterrupted()) await cleanup();
}
