import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { availableParallelism } from 'node:os';
import { delimiter, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, loadConfig } from '../common/config.js';
import { ingestPath } from '../contract/topics.js';
import {
  DEFAULT_GATEWAY_HTTP_PORT,
  DEFAULT_MQTT_PORT,
  DEFAULT_MQTT_WS_PORT,
  DEFAULT_SHUTDOWN_GRACE_MS,
  WORKERS_STOP_MARGIN_MS,
} from '../gateway/config.js';
import { DEFAULT_PROCESSOR_HTTP_PORT } from '../processors/config.js';

/**
 * `npm start`: the whole pipeline on one machine, each piece a child process of this supervisor.
 *
 * NATS: NATS_URL when set, or a nats-server with JetStream already listening on NATS_PORT, else our
 * own with JetStream in DATA_DIR/nats. TSDB: INFLUX_URL when set, else our own VictoriaMetrics
 * (InfluxDB's write API) with data in DATA_DIR/tsdb. Then the gateway and the processors, and once
 * both answer /readyz, a demo fleet (unless --no-demo). A banner with every URL follows.
 *
 * Ctrl-C or SIGTERM stops the children one by one, by pid, in STOP_ORDER; each gets a bounded wait,
 * then SIGKILL. Children run in their own process group so that the terminal's Ctrl-C reaches only
 * this supervisor, which then decides the order.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Absolute, so that the children find tsx and their entry points from any working directory. */
const TSX_LOADER = import.meta.resolve('tsx');

const DEFAULT_NATS_PORT = 4222;
const DEFAULT_VICTORIA_METRICS_PORT = 8428;
const DEFAULT_DATA_DIR = '.data';
/** The gateway serves no HTTP ingest unless told; a local run does, so that curl works at once. */
const DEFAULT_HTTP_INGEST_PORT = 8088;
const DEFAULT_NATS_URL = `nats://127.0.0.1:${DEFAULT_NATS_PORT}`;
const DEMO_DEVICES = 20;
const DEMO_RATE_PER_DEVICE = 1;
const DEMO_TENANT = 'demo';
const SIMULATOR_ENTRY = 'simulators/main.ts';
/** Thermometers overheat now and then, a tenth of the devices nap: something for the demo rules to find. */
const DEMO_FAULTS = ['--overheat', '100', '--naps', '10'];
/** Alert rules for the demo fleet's episodes, given to the processors unless ALERT_RULES_FILE is set. */
const DEMO_ALERT_RULES = 'scripts/demo-alert-rules.yaml';
/** The simulator has no "until stopped"; a week outlasts any local session, and Ctrl-C ends it sooner. */
const DEMO_DURATION = '7d';
/** On SIGTERM the simulator waits this long for outstanding acknowledgements, then removes its devices. */
const DEMO_DRAIN_TIMEOUT = '5s';
const DEMO_STOP_TIMEOUT_MS = 15_000;
/** Two cold tsx starts on a loaded 2-core machine take several seconds; a stuck start should not hang. */
const READY_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 100;
/**
 * Above the gateway's own drain budget (with workers, its primary's, which waits for them), so that it
 * is never killed while it still drains: a primary killed would leave its workers to drain unwatched.
 */
const STOP_MARGIN_MS = WORKERS_STOP_MARGIN_MS + 5_000;
/** The processors give up on unwritten batches after 5 s (their SHUTDOWN_GRACE_MS), then give back leases. */
const PROCESSORS_STOP_TIMEOUT_MS = 15_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;
const NATS_PROBE_TIMEOUT_MS = 2_000;
/** Debian installs nats-server in /usr/sbin, which is not on a normal user's PATH. */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];
const EXIT_FAILED = 1;
const EXIT_CONFIG = 2;
const EXIT_USAGE = 64;

type ChildName = 'nats-server' | 'victoria-metrics' | 'gateway' | 'processors' | 'demo fleet';
/** Producers first, so that each stage can hand what it holds to the next one, which is still up. */
const STOP_ORDER: readonly ChildName[] = [
  'demo fleet',
  'gateway',
  'processors',
  'victoria-metrics',
  'nats-server',
];

const USAGE = `usage: npm start [-- --no-demo]

  --no-demo   leave out the demo fleet (${DEMO_DEVICES} simulated devices of tenant '${DEMO_TENANT}')

Environment: NATS_URL, NATS_PORT, INFLUX_URL, VICTORIA_METRICS_PORT, MQTT_PORT, MQTT_WS_PORT, HTTP_INGEST_PORT,
HTTP_PORT (gateway), GATEWAY_WORKERS, PROCESSORS_HTTP_PORT, AUTH_MODE, BIND_HOST, DATA_DIR; see README.md.`;

const listenPort = (fallback: number) => z.coerce.number().int().min(1).max(65_535).default(fallback);

/** Only what the supervisor itself decides; the children still load and check their own configuration. */
const StartConfigSchema = z.object({
  NATS_URL: z.string().optional(),
  NATS_PORT: listenPort(DEFAULT_NATS_PORT),
  INFLUX_URL: z.string().optional(),
  VICTORIA_METRICS_PORT: listenPort(DEFAULT_VICTORIA_METRICS_PORT),
  MQTT_PORT: listenPort(DEFAULT_MQTT_PORT),
  MQTT_WS_PORT: listenPort(DEFAULT_MQTT_WS_PORT),
  HTTP_INGEST_PORT: listenPort(DEFAULT_HTTP_INGEST_PORT),
  HTTP_PORT: listenPort(DEFAULT_GATEWAY_HTTP_PORT),
  PROCESSORS_HTTP_PORT: listenPort(DEFAULT_PROCESSOR_HTTP_PORT),
  BIND_HOST: z.string().default('0.0.0.0'),
  AUTH_MODE: z.enum(['registry', 'open']).default('registry'),
  SHUTDOWN_GRACE_MS: z.coerce.number().int().positive().default(DEFAULT_SHUTDOWN_GRACE_MS),
  /** Passed on to the gateway as it is (it checks it), and shown in the banner. */
  GATEWAY_WORKERS: z.string().optional(),
  DATA_DIR: z.string().default(DEFAULT_DATA_DIR),
  OPERATOR_TOKEN: z.string().optional(),
});
type StartConfig = z.output<typeof StartConfigSchema>;

interface Running {
  name: ChildName;
  child: ChildProcess;
  stopTimeoutMs: number;
  stopSignal: NodeJS.Signals;
  /** The pipeline keeps running without it. */
  optional?: boolean;
  logFile?: string;
}

/** Thrown out of main() when a stop began while it was still starting things. */
class Stopping extends Error {}

const children: Running[] = [];
let stopping = false;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((done) => {
    if (!isRunning(child)) done();
    else child.once('exit', () => done());
  });
}

function describeExit(child: ChildProcess): string {
  return child.signalCode ? `on ${child.signalCode}` : `with code ${child.exitCode}`;
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined && isRunning(child)) process.kill(child.pid, sig);
  } catch {
    // Exited between the check and the kill.
  }
}

/** PATH, then the sbin directories; undefined when not installed. */
function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...SBIN_DIRS];
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Resolves when the port can be bound on host, i.e. nothing else holds it. */
function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => done(true)));
  });
}

type NatsProbe = { kind: 'none' } | { kind: 'other' } | { kind: 'nats'; jetstream: boolean };

/** What listens on a port: nothing, a NATS server (it greets with `INFO {…}`), or something else. */
function probeNats(port: number): Promise<NatsProbe> {
  return new Promise((done) => {
    const socket = tcpConnect({ port, host: '127.0.0.1' });
    let greeting = '';
    const finish = (probe: NatsProbe) => {
      clearTimeout(timer);
      socket.destroy();
      done(probe);
    };
    const timer = setTimeout(() => finish({ kind: 'other' }), NATS_PROBE_TIMEOUT_MS);
    socket.once('error', () => finish({ kind: 'none' }));
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      greeting += chunk;
      const end = greeting.indexOf('\r\n');
      if (end < 0) return;
      const line = greeting.slice(0, end);
      if (!line.startsWith('INFO ')) return finish({ kind: 'other' });
      try {
        const info = JSON.parse(line.slice(5)) as { jetstream?: boolean };
        finish({ kind: 'nats', jetstream: info.jetstream === true });
      } catch {
        finish({ kind: 'other' });
      }
    });
  });
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

async function waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (stopping) throw new Stopping();
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} was not ready within ${READY_TIMEOUT_MS / 1000} s`);
    await sleep(POLL_INTERVAL_MS);
  }
}

function launch(
  name: ChildName,
  command: string,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    stopTimeoutMs?: number;
    stopSignal?: NodeJS.Signals;
    optional?: boolean;
    logFile?: string;
  } = {},
): void {
  if (stopping) throw new Stopping();
  let stdio: StdioOptions = ['ignore', 'inherit', 'inherit'];
  let logFd: number | undefined;
  if (options.logFile !== undefined) {
    logFd = openSync(options.logFile, 'a');
    stdio = ['ignore', logFd, logFd];
  }
  const child = spawn(command, args, {
    stdio,
    env: { ...process.env, ...options.env },
    detached: true,
  });
  // The child holds its own copy of the descriptor.
  if (logFd !== undefined) closeSync(logFd);
  const running: Running = {
    name,
    child,
    stopTimeoutMs: options.stopTimeoutMs ?? SERVER_STOP_TIMEOUT_MS,
    stopSignal: options.stopSignal ?? 'SIGTERM',
    optional: options.optional,
    logFile: options.logFile,
  };
  children.push(running);
  child.once('error', (err) => {
    console.error(`start: ${name}: ${err.message}`);
    void stopAll(EXIT_FAILED);
  });
  child.once('exit', () => {
    if (stopping) return;
    const where = running.logFile ? `; see ${shown(running.logFile)}` : '';
    if (running.optional) {
      console.error(`start: ${name} exited ${describeExit(child)}${where}; the pipeline keeps running`);
      return;
    }
    console.error(`start: ${name} exited ${describeExit(child)}${where}; stopping the rest`);
    void stopAll(EXIT_FAILED);
  });
}

/** A path as the user would type it: relative to where they are when that is shorter. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== '' && !rel.startsWith('..') && rel.length < path.length ? rel : path;
}

/** Its stop signal, a bounded wait, then SIGKILL. True when the child stopped by itself and cleanly. */
async function stopChild(running: Running): Promise<boolean> {
  const { child, name, stopTimeoutMs, stopSignal } = running;
  // No pid: it never started, and its 'error' was reported already.
  if (child.pid === undefined || !isRunning(child)) return true;
  const done = exited(child);
  signal(child, stopSignal);
  let timer: NodeJS.Timeout | undefined;
  const inTime = await Promise.race([
    done.then(() => true),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), stopTimeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (!inTime) {
    console.error(`start: ${name} did not stop within ${stopTimeoutMs / 1000} s; killing it`);
    signal(child, 'SIGKILL');
    await done;
    return false;
  }
  // A server without a SIGTERM handler of its own ends on the signal itself: that is its clean stop.
  if (child.exitCode === 0 || child.signalCode === stopSignal) return true;
  console.error(`start: ${name} exited ${describeExit(child)} when stopped`);
  return false;
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  const order = STOP_ORDER.filter((name) => children.some((c) => c.name === name && isRunning(c.child)));
  if (exitCode === 0) console.log(`start: stopping ${order.join(', ')}`);
  let clean = exitCode === 0;
  for (const name of order) {
    for (const running of children.filter((c) => c.name === name)) {
      if (!(await stopChild(running)) && !running.optional) clean = false;
    }
  }
  if (clean) console.log('start: stopped');
  process.exit(clean ? 0 : exitCode || EXIT_FAILED);
}

function fail(message: string, code = EXIT_FAILED): never {
  console.error(`start: ${message}`);
  process.exit(code);
}

function loadStartConfig(): StartConfig {
  try {
    // CONFIG_FILE belongs to the children (it may hold keys of either); the supervisor reads the environment.
    return loadConfig(StartConfigSchema, { ...process.env, CONFIG_FILE: undefined });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }
}

/** Every port this start will bind, checked before anything is started so that a clash costs nothing. */
async function checkPorts(config: StartConfig, ownNats: boolean, ownTsdb: boolean): Promise<void> {
  const wanted: { variable: string; what: string; port: number; host: string }[] = [
    { variable: 'MQTT_PORT', what: 'MQTT', port: config.MQTT_PORT, host: config.BIND_HOST },
    {
      variable: 'MQTT_WS_PORT',
      what: 'MQTT over WebSocket',
      port: config.MQTT_WS_PORT,
      host: config.BIND_HOST,
    },
    {
      variable: 'HTTP_INGEST_PORT',
      what: 'HTTP ingest',
      port: config.HTTP_INGEST_PORT,
      host: config.BIND_HOST,
    },
    { variable: 'HTTP_PORT', what: 'gateway HTTP', port: config.HTTP_PORT, host: config.BIND_HOST },
    {
      variable: 'PROCESSORS_HTTP_PORT',
      what: 'processors HTTP',
      port: config.PROCESSORS_HTTP_PORT,
      host: config.BIND_HOST,
    },
  ];
  if (ownTsdb) {
    wanted.push({
      variable: 'VICTORIA_METRICS_PORT',
      what: 'VictoriaMetrics',
      port: config.VICTORIA_METRICS_PORT,
      host: '127.0.0.1',
    });
  }
  if (ownNats)
    wanted.push({ variable: 'NATS_PORT', what: 'nats-server', port: config.NATS_PORT, host: '127.0.0.1' });
  const seen = new Map<number, string>();
  for (const { variable, what, port, host } of wanted) {
    const other = seen.get(port);
    if (other !== undefined) fail(`${variable} and ${other} are both ${port}; give each its own port`);
    seen.set(port, variable);
    if (!(await portFree(port, host))) {
      const hint =
        variable === 'VICTORIA_METRICS_PORT'
          ? `set ${variable} to another port, or INFLUX_URL=http://127.0.0.1:${port} to use the TSDB there`
          : `set ${variable} to another port, or stop what holds it`;
      fail(`port ${port} (${variable}, ${what}) is already in use; ${hint}`);
    }
  }
}

interface Endpoints {
  natsUrl: string;
  natsNote: string;
  tsdbUrl: string;
  tsdbNote: string;
  /** VictoriaMetrics' export API answers `read it`; an InfluxDB from INFLUX_URL has its own UI. */
  ownTsdb: boolean;
  /** The live view's address, with the token when this run made it up. */
  liveUrl: string;
}

function displayHost(config: StartConfig): string {
  return config.BIND_HOST === '0.0.0.0' || config.BIND_HOST === '::' ? '127.0.0.1' : config.BIND_HOST;
}

function ingestUrl(config: StartConfig, device: string): string {
  return `http://${displayHost(config)}:${config.HTTP_INGEST_PORT}${ingestPath(device)}`;
}

function banner(config: StartConfig, at: Endpoints, notes: string[]): string {
  const host = displayHost(config);
  const hostFlag = host === '127.0.0.1' ? '' : `-h ${host} `;
  const natsPrefix = at.natsUrl === DEFAULT_NATS_URL ? '' : `NATS_URL=${at.natsUrl} `;
  const reading = `-t devices/dev-1/telemetry -m '{"metrics":{"temperature":21.5}}'`;
  const post = `-H 'content-type: application/json' -d '{"metrics":{"temperature":21.6}}' ${ingestUrl(config, 'dev-1')}`;
  const howTo =
    config.AUTH_MODE === 'open'
      ? [
          `  publish:       mosquitto_pub ${hostFlag}-p ${config.MQTT_PORT} -i dev-1 -q 1 ${reading}`,
          `  or post:       curl ${post}`,
        ]
      : [
          `  add a device:  ${natsPrefix}npm run devices -- add dev-1 --tenant acme   (prints its secret once)`,
          `  publish:       mosquitto_pub ${hostFlag}-p ${config.MQTT_PORT} -i dev-1 -u dev-1 -P '<secret>' -q 1 ${reading}`,
          `  or post:       curl -u dev-1:'<secret>' ${post}`,
        ];
  if (at.ownTsdb)
    howTo.push(`  read it:       curl -s ${at.tsdbUrl}/api/v1/export -d 'match[]={device="dev-1"}'`);
  return [
    'start: ready',
    `  MQTT          mqtt://${host}:${config.MQTT_PORT}   ws://${host}:${config.MQTT_WS_PORT}   (AUTH_MODE=${config.AUTH_MODE})`,
    `  HTTP ingest   ${ingestUrl(config, '{id}')}   (POST, JSON or CBOR)`,
    `  gateway       ${config.GATEWAY_WORKERS ?? availableParallelism()} worker(s) sharing those ports (GATEWAY_WORKERS; default the cores, 1 = one process)`,
    `  NATS          ${at.natsUrl}   (${at.natsNote})`,
    `  TSDB          ${at.tsdbUrl}   (${at.tsdbNote})`,
    `  live view     ${at.liveUrl}`,
    `  metrics       http://${host}:${config.HTTP_PORT}/metrics (gateway)   http://${host}:${config.PROCESSORS_HTTP_PORT}/metrics (processors)`,
    ...notes.map((n) => `  ${n}`),
    '',
    ...howTo,
    '  stop:          Ctrl-C',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  let demo: boolean;
  try {
    const { values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        demo: { type: 'boolean', default: true },
        'no-demo': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return;
    }
    demo = values.demo && !values['no-demo'];
  } catch (err) {
    fail(`${(err as Error).message}\n\n${USAGE}`, EXIT_USAGE);
  }
  const config = loadStartConfig();
  const dataDir = resolve(config.DATA_DIR);

  // `on`, not `once`: tsx relays the terminal's SIGINT too, and a second one must not kill us mid-stop.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void stopAll(0));
  // Detached children would outlive a supervisor that dies some other way.
  process.once('exit', () => {
    for (const { child } of children) signal(child, 'SIGKILL');
  });

  let natsUrl = config.NATS_URL;
  let natsNote: string;
  let ownNats = false;
  if (natsUrl === undefined) {
    natsUrl = `nats://127.0.0.1:${config.NATS_PORT}`;
    const probe = await probeNats(config.NATS_PORT);
    if (probe.kind === 'other')
      fail(
        `port ${config.NATS_PORT} (NATS_PORT) is held by something that is not a NATS server; set NATS_PORT or NATS_URL`,
      );
    if (probe.kind === 'nats' && !probe.jetstream)
      fail(
        `the nats-server on port ${config.NATS_PORT} runs without JetStream; restart it with -js, or set NATS_PORT`,
      );
    ownNats = probe.kind === 'none';
    natsNote = ownNats ? `JetStream in ${shown(join(dataDir, 'nats'))}` : 'already running, used as it is';
  } else {
    natsNote = 'from NATS_URL';
  }
  const ownTsdb = config.INFLUX_URL === undefined;
  const tsdbUrl = config.INFLUX_URL ?? `http://127.0.0.1:${config.VICTORIA_METRICS_PORT}`;

  const binaries = new Map<string, string>();
  for (const name of [...(ownNats ? ['nats-server'] : []), ...(ownTsdb ? ['victoria-metrics'] : [])]) {
    const path = findBinary(name);
    if (path === undefined) fail(`${name} is not installed; run \`npm run setup\``);
    binaries.set(name, path);
  }
  await checkPorts(config, ownNats, ownTsdb);
  mkdirSync(dataDir, { recursive: true });

  if (ownNats) {
    const store = join(dataDir, 'nats');
    mkdirSync(store, { recursive: true });
    launch(
      'nats-server',
      binaries.get('nats-server')!,
      [
        '-a',
        '127.0.0.1',
        '-p',
        String(config.NATS_PORT),
        '-js',
        '-sd',
        store,
        '-l',
        join(dataDir, 'nats-server.log'),
      ],
      // nats-server 2.9 shuts down the same way on both, but exits 1 on SIGTERM and 0 on SIGINT.
      { stopSignal: 'SIGINT' },
    );
  }
  if (ownTsdb) {
    launch(
      'victoria-metrics',
      binaries.get('victoria-metrics')!,
      [
        `-httpListenAddr=127.0.0.1:${config.VICTORIA_METRICS_PORT}`,
        `-storageDataPath=${join(dataDir, 'tsdb')}`,
      ],
      // It logs only to stderr; in the terminal its start-up lines would bury everyone else's.
      { logFile: join(dataDir, 'victoria-metrics.log') },
    );
  }
  if (ownNats) {
    await waitUntil('nats-server', async () => (await probeNats(config.NATS_PORT)).kind === 'nats');
  }
  if (ownTsdb) await waitUntil('victoria-metrics', () => httpOk(`${tsdbUrl}/health`));

  // The live view needs an operator token in AUTH_MODE=registry; a local run makes one up for itself
  // and shows it once in the banner, so the page opens without a configuration step.
  const operatorToken = config.OPERATOR_TOKEN ?? randomBytes(16).toString('hex');
  const local = displayHost(config);
  const liveUrl =
    config.OPERATOR_TOKEN === undefined
      ? `http://${local}:${config.HTTP_PORT}/?token=${operatorToken}`
      : `http://${local}:${config.HTTP_PORT}/   (with your OPERATOR_TOKEN: /?token=…)`;

  // Started together: the processors wait for the gateway to create the TELEMETRY stream.
  const node = (entry: string) => ['--import', TSX_LOADER, join(ROOT, entry)];
  launch('gateway', process.execPath, node('gateway/main.ts'), {
    env: {
      NATS_URL: natsUrl,
      HTTP_PORT: String(config.HTTP_PORT),
      HTTP_INGEST_PORT: String(config.HTTP_INGEST_PORT),
      OPERATOR_TOKEN: operatorToken,
    },
    stopTimeoutMs: config.SHUTDOWN_GRACE_MS + STOP_MARGIN_MS,
  });
  const demoRules = demo && !process.env.ALERT_RULES_FILE && existsSync(join(ROOT, SIMULATOR_ENTRY));
  launch('processors', process.execPath, node('processors/main.ts'), {
    env: {
      NATS_URL: natsUrl,
      INFLUX_URL: tsdbUrl,
      HTTP_PORT: String(config.PROCESSORS_HTTP_PORT),
      ...(demoRules ? { ALERT_RULES_FILE: join(ROOT, DEMO_ALERT_RULES) } : {}),
    },
    stopTimeoutMs: PROCESSORS_STOP_TIMEOUT_MS,
  });
  await Promise.all([
    waitUntil('the gateway', () => httpOk(`http://${local}:${config.HTTP_PORT}/readyz`)),
    waitUntil('the processors', () => httpOk(`http://${local}:${config.PROCESSORS_HTTP_PORT}/readyz`)),
  ]);

  const notes: string[] = [];
  if (!demo) {
    notes.push('demo fleet    off (--no-demo)');
  } else if (!existsSync(join(ROOT, SIMULATOR_ENTRY))) {
    notes.push(`demo fleet    none yet: ${SIMULATOR_ENTRY} is not written`);
  } else {
    const logFile = join(dataDir, 'demo-fleet.log');
    launch(
      'demo fleet',
      process.execPath,
      [
        ...node(SIMULATOR_ENTRY),
        ...['--devices', String(DEMO_DEVICES), '--rate', String(DEMO_RATE_PER_DEVICE)],
        ...['--duration', DEMO_DURATION, '--drain-timeout', DEMO_DRAIN_TIMEOUT, '--progress', 'plain'],
        ...['--url', `mqtt://${local}:${config.MQTT_PORT}`, '--auth', config.AUTH_MODE],
        ...['--tenant', DEMO_TENANT, '--nats', natsUrl],
        ...DEMO_FAULTS,
      ],
      { optional: true, logFile, stopTimeoutMs: DEMO_STOP_TIMEOUT_MS },
    );
    notes.push(
      `demo fleet    ${DEMO_DEVICES} devices of tenant '${DEMO_TENANT}', ${DEMO_RATE_PER_DEVICE} reading/s each, ` +
        `log in ${shown(logFile)} (--no-demo leaves it out)`,
    );
    if (demoRules)
      notes.push(
        `alert rules   ${DEMO_ALERT_RULES}: thermometers overheat and devices nap now and then, the first time within 2 min`,
      );
  }
  const tsdbNote = ownTsdb ? `VictoriaMetrics, data in ${shown(join(dataDir, 'tsdb'))}` : 'from INFLUX_URL';
  console.log(banner(config, { natsUrl, natsNote, tsdbUrl, tsdbNote, ownTsdb, liveUrl }, notes));
}

main().catch((err: Error) => {
  if (err instanceof Stopping) return;
  console.error(`start: ${err.message}`);
  void stopAll(EXIT_FAILED);
});
