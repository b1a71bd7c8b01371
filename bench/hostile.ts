import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { MqttClient } from 'mqtt';
import { DeviceRegistry } from '../gateway/registry/device-registry.js';
import { type Latencies, measurePubacks } from '../test/kit/latency.js';
import { connectDevice } from '../test/kit/mqtt.js';
import { startScript } from '../test/kit/processes.js';
import { startGatewayProcess } from './gateway-process.js';
import { cleanup, hold, stopOnExit } from './lifecycle.js';
import { heldNatsConnection, heldNatsServer } from './nats.js';
import { median } from './stats.js';

/**
 * `npm run bench:hostile`: one device attacks the gateway in each of the shapes found to hurt (see
 * test/security/clients/hostile.ts), while 20 well-behaved devices publish QoS 1 at 10/s each. For
 * each shape it prints the others' publish → PUBACK p50/p99 just before and during the attack, the
 * bound the README promises (p99 within 2× of before, or 250 ms, whichever is larger), and the
 * gateway's RSS before, at its peak, and a few seconds after. The gateway runs with its default
 * limits, in its own process, as production runs it.
 */
const SHAPES = [
  'qos0-flood',
  'batch-amplify',
  'big-batches',
  'garbage',
  'metric-names',
  'long-client-ids',
  'connections',
  'idle-sockets',
  'pingreq',
];
const HELP = `usage: npm run bench:hostile -- [--seconds S] [--runs R] [--shapes a,b,...]
  --seconds S   length of each attack and of each measurement before it (default 8)
  --runs R      times through all shapes (default 3); medians are printed at the end
  --shapes      some of ${SHAPES.join(',')}`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const CALM_DEVICES = 20;
/**
 * After an attack: time for what it left in flight to drain, and for V8 to give back the heap it grew
 * (its memory reducer runs some 10–20 s after the load stops), before RSS is read again.
 */
const SETTLE_MS = 30_000;

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    runs: { type: 'string', default: '3' },
    shapes: { type: 'string', default: SHAPES.join(',') },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
const seconds = Number(values.seconds);
const runs = Number(values.runs);
const shapes = values.shapes.split(',');
for (const s of shapes) if (!SHAPES.includes(s)) throw new Error(`unknown shape ${s}\n${HELP}`);

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

interface Result {
  shape: string;
  before: Latencies;
  during: Latencies;
  rss: { before: number; peak: number; after: number };
  attacker: string;
}

stopOnExit('the gateway and nats-server');

async function main() {
  const nats = await heldNatsServer({ serverName: 'hostile' });
  const nc = await heldNatsConnection(nats.url, 'bench-hostile');
  const registry = await DeviceRegistry.open(nc);
  const calm = [];
  for (let i = 0; i < CALM_DEVICES; i++) {
    const { secret } = await registry.add({ id: `calm-${i}`, tenant: 'acme', labels: {} });
    calm.push({ id: `calm-${i}`, secret });
  }
  const gateway = await startGatewayProcess({ cwd: REPO_ROOT, natsUrl: nats.url });
  hold(
    'gateway',
    () => gateway.stop(),
    () => gateway.kill(),
  );
  const clients: MqttClient[] = [];
  for (const d of calm) clients.push(await connectDevice(gateway.mqttPort, d, { keepalive: 30 }));
  hold(
    'clients',
    () => Promise.all(clients.map((c) => c.endAsync(true))).then(() => undefined),
    () => {},
  );
  const ids = calm.map((d) => d.id);
  console.log(
    `gateway pid ${gateway.pid}, ${CALM_DEVICES} devices publishing QoS 1 at 10/s each; ` +
      `${seconds} s per attack, ${runs} run(s)`,
  );

  const results: Result[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const shape of shapes) {
      const attackerId = `hostile-${shape}-${run}`;
      const { secret } = await registry.add({ id: attackerId, tenant: 'acme', labels: {} });
      const before = await measurePubacks(clients, ids, seconds * 1000);
      const rssBefore = rssMiB(gateway.pid);
      const script =
        shape === 'qos0-flood' ? 'test/security/clients/flood.ts' : 'test/security/clients/hostile.ts';
      const args = shape === 'qos0-flood' ? [] : [shape];
      const attacker = startScript(script, [...args, String(gateway.mqttPort), attackerId, secret]);
      let peak = rssBefore;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssMiB(gateway.pid));
      }, 250);
      await sleep(1_000);
      const during = await measurePubacks(clients, ids, seconds * 1000);
      attacker.kill();
      await attacker.finished;
      const said = attacker.output().stdout.trim().split('\n').at(-1) ?? '{}';
      await sleep(SETTLE_MS);
      clearInterval(sampler);
      const result: Result = {
        shape,
        before,
        during,
        rss: { before: rssBefore, peak, after: rssMiB(gateway.pid) },
        attacker: said,
      };
      results.push(result);
      console.log(line(result, run));
    }
  }
  console.log('\nmedians over runs:');
  for (const shape of shapes) {
    const of = results.filter((r) => r.shape === shape);
    const m = (f: (r: Result) => number) => median(of.map(f));
    const base = m((r) => r.before.p99);
    const during = m((r) => r.during.p99);
    const bound = Math.max(2 * base, 250);
    console.log(
      `${shape.padEnd(16)} p99 before ${base.toFixed(1)} ms, during ${during.toFixed(1)} ms ` +
        `(${(during / base).toFixed(2)}×; bound ${bound.toFixed(0)} ms: ${during <= bound ? 'within' : 'OVER'}); ` +
        `RSS ${m((r) => r.rss.before).toFixed(0)} → peak ${m((r) => r.rss.peak).toFixed(0)} → ` +
        `${m((r) => r.rss.after).toFixed(0)} MiB (${(100 * (m((r) => r.rss.after / r.rss.before) - 1)).toFixed(0)} %)`,
    );
  }
}

function line(r: Result, run: number): string {
  const bound = Math.max(2 * r.before.p99, 250);
  const lost = r.during.sent - r.during.acked;
  return (
    `run ${run} ${r.shape.padEnd(16)} others p50/p99 ${r.before.p50.toFixed(1)}/${r.before.p99.toFixed(1)} → ` +
    `${r.during.p50.toFixed(1)}/${r.during.p99.toFixed(1)} ms ` +
    `(${r.during.p99 <= bound ? 'within' : 'OVER'} ${bound.toFixed(0)} ms${lost > 0 ? `, ${lost} unacked` : ''}); ` +
    `RSS ${r.rss.before.toFixed(0)}/${r.rss.peak.toFixed(0)}/${r.rss.after.toFixed(0)} MiB; attacker ${r.attacker}`
  );
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
