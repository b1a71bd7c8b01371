import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { TELEMETRY_STREAM } from '../contract/subjects.js';
import { runSimulation } from '../simulators/index.js';
import { RunStats } from '../simulators/progress.js';
import { CpuSampler } from './cpu.js';
import { startGatewayProcess } from './gateway-process.js';
import { cleanup, hold, stopOnExit } from './lifecycle.js';
import { heldNatsServer } from './nats.js';
import { durationOption } from './options.js';

/**
 * `npm run bench:simulator`: can the simulator drive the gateway at its target rate? 1,000 devices,
 * each its own mqtt.js connection, 10 QoS 1 publishes a second each (10k msg/s), against the gateway
 * in its own process (registry auth) on a fresh nats-server, all on this machine. Reports the
 * acknowledged rate over the run, publish → PUBACK latency, CPU per process, and checks that
 * TELEMETRY holds one event per acknowledged reading.
 */
const HELP = `usage: npm run bench:simulator -- [options]
  --devices N      (default 1000)
  --rate R         publishes per second per device (default 10)
  --duration D     (default 30s)
  --batch N        readings per publish (default 1)
  --qos 0|1        (default 1)
  --auth registry|open   how the gateway authenticates (default registry)
  --warmup D       left out of the latency and CPU figures (default 10s: JIT, first JetStream writes)`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '1000' },
    rate: { type: 'string', default: '10' },
    duration: { type: 'string', default: '30s' },
    batch: { type: 'string', default: '1' },
    qos: { type: 'string', default: '1' },
    auth: { type: 'string', default: 'registry' },
    warmup: { type: 'string', default: '10s' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}

stopOnExit('the gateway and nats-server');

const nats = await heldNatsServer({ serverName: 'bench_simulator' });
const gateway = await startGatewayProcess({
  cwd: REPO_ROOT,
  natsUrl: nats.url,
  env: { AUTH_MODE: values.auth === 'open' ? 'open' : 'registry' },
});
hold(
  'gateway',
  () => gateway.stop(),
  () => gateway.kill(),
);

const sampler = new CpuSampler(
  () =>
    new Map<string, number | undefined>([
      ['simulator', process.pid],
      ['gateway', gateway.pid],
      ['nats-server', nats.pid],
    ]),
);
const target = Number(values.devices) * Number(values.rate);
console.log(
  `bench:simulator ${values.devices} devices × ${values.rate}/s = ${target.toLocaleString('en-US')} msg/s ` +
    `for ${values.duration}, QoS ${values.qos}, batch ${values.batch}, auth ${values.auth} ` +
    `(node ${process.version}, ${new Date().toISOString()})`,
);
const warmupMs = durationOption('warmup', values.warmup);
const stats = new RunStats();
const steady = { acked: 0, at: 0, ackedEnd: 0, atEnd: 0 };
let warmupTimer: NodeJS.Timeout | undefined;
try {
  const result = await runSimulation(
    {
      url: `mqtt://127.0.0.1:${gateway.mqttPort}`,
      nats: nats.url,
      auth: values.auth,
      devices: values.devices,
      rate: values.rate,
      duration: values.duration,
      batch: values.batch,
      qos: values.qos,
      seed: 1,
      progress: 'plain',
    },
    {
      log: (line) => console.log(line),
      stats,
      onSending: () => {
        warmupTimer = setTimeout(() => {
          stats.resetWindow();
          steady.acked = stats.acked;
          steady.at = performance.now();
          sampler.start();
        }, warmupMs);
      },
      onSent: () => {
        clearTimeout(warmupTimer);
        steady.ackedEnd = stats.acked;
        steady.atEnd = performance.now();
        sampler.stop();
      },
    },
  );
  console.log(result.report);
  const cpu = sampler
    .usage()
    .map((c) => `${c.name} ${Math.round(c.percent)}%`)
    .join(', ');
  console.log(`cpu (of one core, while sending): ${cpu}`);
  const nc = await connect({ servers: nats.url });
  const stored = (await (await jetstreamManager(nc)).streams.info(TELEMETRY_STREAM)).state.messages;
  await nc.close();
  const readings = result.ledger.totals.readings;
  console.log(
    `TELEMETRY holds ${stored.toLocaleString('en-US')} events for ${readings.toLocaleString('en-US')} acknowledged readings` +
      (stored === readings ? ' (exact)' : ' (MISMATCH)'),
  );
  const s = result.summary;
  const steadyRate = ((steady.ackedEnd - steady.acked) * 1000) / (steady.atEnd - steady.at);
  const p = (q: number) => stats.window.getValueAtQuantile(q).toFixed(1);
  console.log(
    `\nRESULT whole run ${Math.round(s.ackedPerS).toLocaleString('en-US')} acked msg/s of ` +
      `${target.toLocaleString('en-US')} target; after the ${values.warmup} warm-up ` +
      `${Math.round(steadyRate).toLocaleString('en-US')} acked msg/s, p50 ${p(0.5)} ms, p99 ${p(0.99)} ms ` +
      `(whole run p50 ${s.latencyMs?.p50.toFixed(1)} ms, p99 ${s.latencyMs?.p99.toFixed(1)} ms), ` +
      `${s.devices} devices connected in ${(s.connectMs / 1000).toFixed(1)} s`,
  );
} finally {
  await cleanup();
}
