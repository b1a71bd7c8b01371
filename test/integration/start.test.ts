import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TAG_DEVICE, TAG_TENANT, TELEMETRY_MEASUREMENT, telemetryTopic } from '../../contract/index.js';
import { exportSeries } from '../../simulators/victoria-metrics.js';
import { curl } from '../kit/curl.js';
import { mosquittoPub } from '../kit/mqtt.js';
import { freePort, runScript, type Started, startScript } from '../kit/processes.js';
import { selectorToMatch } from '../kit/victoria-metrics.js';

/**
 * `npm start` as a user runs it: its own nats-server and VictoriaMetrics, the gateway and the
 * processors, every port free and picked here, `.data` in a temp dir. A device provisioned with the
 * devices CLI publishes with mosquitto_pub; the reading must reach the TSDB; SIGTERM must stop every
 * child, by the time the supervisor exits 0.
 */
const READY_TIMEOUT_MS = 40_000;
const STORED_TIMEOUT_MS = 20_000;

let dataDir: string;
const started: Started[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'npm-start-'));
});

afterEach(() => {
  // A failed test must not leave a supervisor behind; it takes its children with it on exit.
  for (const s of started.splice(0)) s.kill('SIGTERM');
});

afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

interface Ports extends Record<string, string> {
  NATS_PORT: string;
  VICTORIA_METRICS_PORT: string;
  MQTT_PORT: string;
  MQTT_WS_PORT: string;
  HTTP_PORT: string;
  HTTP_INGEST_PORT: string;
  PROCESSORS_HTTP_PORT: string;
}

async function freePorts(): Promise<Ports> {
  return {
    NATS_PORT: String(await freePort()),
    VICTORIA_METRICS_PORT: String(await freePort()),
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: String(await freePort()),
    HTTP_PORT: String(await freePort()),
    HTTP_INGEST_PORT: String(await freePort()),
    PROCESSORS_HTTP_PORT: String(await freePort()),
  };
}

/** The environment of a local run: no NATS_URL or INFLUX_URL (empty counts as unset), so it starts its own. */
function startEnv(ports: Ports, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...ports,
    NATS_URL: '',
    INFLUX_URL: '',
    CONFIG_FILE: '',
    AUTH_MODE: '',
    BIND_HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

async function waitForOutput(app: Started, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let done = false;
  void app.finished.then(() => (done = true));
  while (!app.output().stdout.includes(text)) {
    const { stdout, stderr } = app.output();
    if (done) throw new Error(`start exited before '${text}':\n${stdout}\n${stderr}`);
    if (Date.now() > deadline) throw new Error(`no '${text}' within ${timeoutMs} ms:\n${stdout}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Direct children of a process, with their command lines (Linux /proc). */
function childrenOf(pid: number): { pid: number; command: string }[] {
  const found: { pid: number; command: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name, which is in parentheses and may hold spaces: state, ppid, …
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      found.push({ pid: Number(entry), command });
    } catch {
      // Exited while we looked.
    }
  }
  return found;
}

async function waitUntilGone(pids: number[], timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    if (Date.now() > deadline) throw new Error(`still running: ${pids.filter(alive).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every value of the series a selector matches; the export client adds the cache-missing nonce itself. */
async function exportValues(tsdbUrl: string, match: string): Promise<number[]> {
  return (await exportSeries(tsdbUrl, match)).flatMap((series) => series.values);
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + STORED_TIMEOUT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not within ${STORED_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function waitForValues(tsdbUrl: string, match: string): Promise<number[]> {
  const deadline = Date.now() + STORED_TIMEOUT_MS;
  for (;;) {
    const values = await exportValues(tsdbUrl, match);
    if (values.length > 0) return values;
    if (Date.now() > deadline) throw new Error(`nothing matched ${match} within ${STORED_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('npm start', () => {
  // The demo fleet comes with the simulator; until it exists, start runs without one and says so.
  const withDemo = existsSync(join('simulators', 'main.ts'));

  it('runs the pipeline, stores a mosquitto_pub reading, and stops every child on SIGTERM', async () => {
    const ports = await freePorts();
    const app = startScript('scripts/start.ts', withDemo ? [] : ['--no-demo'], startEnv(ports));
    started.push(app);
    await waitForOutput(app, 'start: ready', READY_TIMEOUT_MS);
    const banner = app.output().stdout;
    expect(banner).toContain(`mqtt://127.0.0.1:${ports.MQTT_PORT}`);
    expect(banner).toContain(`http://127.0.0.1:${ports.VICTORIA_METRICS_PORT}`);
    expect(banner).toContain(`http://127.0.0.1:${ports.PROCESSORS_HTTP_PORT}/metrics`);
    // AUTH_MODE=registry wants an operator token for the live view: the run made one and printed it.
    const liveUrl = /live view\s+(\S+)/.exec(banner)?.[1];
    expect(liveUrl).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${ports.HTTP_PORT}/\\?token=[0-9a-f]{32}$`));
    expect((await fetch(liveUrl!)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${ports.HTTP_PORT}/`)).status).toBe(401);

    // Besides these, tsx's esbuild service is a child of the supervisor too; it must go as well.
    const children = childrenOf(app.child.pid!);
    const expected = ['nats-server', 'victoria-metrics', 'gateway/main.ts', 'processors/main.ts'];
    if (withDemo) expected.push('simulators/main.ts');
    for (const part of expected)
      expect(
        children.filter((c) => c.command.includes(part)),
        part,
      ).toHaveLength(1);
    expect(existsSync(join(dataDir, 'nats'))).toBe(true);
    expect(existsSync(join(dataDir, 'tsdb'))).toBe(true);

    // The registry mode of a default start: provision as the banner says, then publish as that device.
    const natsUrl = `nats://127.0.0.1:${ports.NATS_PORT}`;
    const add = ['add', 'start-1', '--tenant', 'acme', '--json'];
    const added = await runScript('gateway/devices-cli.ts', add, { NATS_URL: natsUrl });
    expect(added.code, added.stderr).toBe(0);
    const device = JSON.parse(added.stdout) as { id: string; secret: string };
    await mosquittoPub(
      Number(ports.MQTT_PORT),
      device,
      telemetryTopic(device.id),
      JSON.stringify({ ts: Date.now(), seq: 1, metrics: { temperature: 21.5 } }),
    );

    const tsdbUrl = `http://127.0.0.1:${ports.VICTORIA_METRICS_PORT}`;
    const reading = selectorToMatch({
      measurement: TELEMETRY_MEASUREMENT,
      field: 'temperature',
      tags: { [TAG_TENANT]: 'acme', [TAG_DEVICE]: device.id },
    });
    expect(await waitForValues(tsdbUrl, reading)).toEqual([21.5]);
    // And over HTTP, as the banner shows it, with curl.
    const postLine = /or post:\s+(curl .*)$/m.exec(banner)?.[1];
    expect(postLine).toContain(`http://127.0.0.1:${ports.HTTP_INGEST_PORT}/v1/devices/dev-1/telemetry`);
    const [posted] = await curl([
      '-u',
      `${device.id}:${device.secret}`,
      '-H',
      'content-type: application/json',
      '--data-binary',
      JSON.stringify({ ts: Date.now(), seq: 2, metrics: { temperature: 21.6 } }),
      `http://127.0.0.1:${ports.HTTP_INGEST_PORT}/v1/devices/${device.id}/telemetry`,
    ]);
    expect(posted!.body).toEqual({ stored: 1, duplicates: 0, rejected: [] });
    await until(async () => (await exportValues(tsdbUrl, reading)).length === 2, 'the posted reading');
    if (withDemo) {
      const demo = `{__name__=~"${TELEMETRY_MEASUREMENT}_.+",${TAG_TENANT}="demo"}`;
      expect((await waitForValues(tsdbUrl, demo)).length).toBeGreaterThan(0);
    }

    app.kill('SIGTERM');
    const result = await app.finished;
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
    expect(result.stdout).toContain('start: stopped');
    // The supervisor waited for each of its own; tsx's esbuild ends once its stdin closes, a moment later.
    const own = children.filter((c) => expected.some((part) => c.command.includes(part)));
    for (const child of own) expect(alive(child.pid), child.command).toBe(false);
    const helpers = children.filter((c) => !own.includes(c));
    await waitUntilGone(helpers.map((c) => c.pid));
  }, 60_000);

  it('names a port in use in one line and starts nothing', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const ports = await freePorts();
      const result = await runScript(
        'scripts/start.ts',
        ['--no-demo'],
        startEnv({ ...ports, MQTT_PORT: String(port) }),
      );
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(
        `start: port ${port} (MQTT_PORT, MQTT) is already in use; set MQTT_PORT to another port, or stop what holds it`,
      );
      expect(result.stdout).toBe('');
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it('names the setup command when a server binary is missing', async () => {
    const emptyPath = await mkdtemp(join(tmpdir(), 'no-bin-'));
    try {
      const result = await runScript(
        'scripts/start.ts',
        ['--no-demo'],
        startEnv(await freePorts(), { PATH: emptyPath }),
      );
      expect(result.code).toBe(1);
      // Which one depends on where this machine keeps nats-server (Debian: /usr/sbin, looked in anyway).
      expect(result.stderr.trim()).toMatch(
        /^start: (nats-server|victoria-metrics) is not installed; run `npm run setup`$/,
      );
    } finally {
      await rm(emptyPath, { recursive: true, force: true });
    }
  });
});
