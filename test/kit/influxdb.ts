import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './processes.js';

/**
 * A real InfluxDB 1.x (the Debian package's `/usr/bin/influxd`, 1.6) on random loopback ports with a
 * temp data dir, no auth, stopped by pid. Used to run the dashboards' InfluxQL for real: the 1.x
 * `/query` API is the one Grafana's InfluxQL mode talks to, on 1.x and, through the v1-compatible
 * API, on InfluxDB 2 and 3.
 *
 * - Two ports: the HTTP API and the RPC service (`bind-address`, used by backup/restore), which
 *   would otherwise take the fixed 8088 and collide with any other influxd on the machine.
 * - Writes go to 1.x `/write?db=…&precision=ms`, whose line protocol is the one InfluxDB 2 takes
 *   and processors/sink/lines.ts builds; a write is queryable as soon as it answers 204.
 */
export interface InfluxDbOptions {
  /** Lines appended to the generated config file (e.g. a `[data]` override). */
  extraConfig?: string;
}

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

/** One statement's answer from `/query`: series, or an error. */
export interface InfluxStatementResult {
  statement_id?: number;
  series?: InfluxSeries[];
  error?: string;
}

export interface InfluxDb {
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  readonly dataDir: string;
  /**
   * Runs InfluxQL as Grafana does (GET `/query`, `epoch=ms`). A parse error comes back as a result
   * with `error` rather than a throw, so callers can report it next to the query.
   */
  query(q: string, db?: string): Promise<InfluxStatementResult[]>;
  /** Line protocol to `/write`; throws with InfluxDB's message unless it answers 204. */
  write(db: string, lines: readonly string[], precision?: 'ns' | 'u' | 'ms' | 's'): Promise<void>;
  createDatabase(name: string): Promise<void>;
  /** Stops the server (SIGKILL) and deletes its temp dir. */
  dispose(): Promise<void>;
  /** The last 64 KiB of the server's log. */
  log(): string;
}

const BINARY = process.env.INFLUXD_BIN ?? '/usr/bin/influxd';
const START_TIMEOUT_MS = 15_000;
const LOG_TAIL_BYTES = 64 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

function config(dir: string, httpPort: number, rpcPort: number, extra: string): string {
  return `reporting-disabled = true
bind-address = "127.0.0.1:${rpcPort}"

[meta]
  dir = "${join(dir, 'meta')}"

[data]
  dir = "${join(dir, 'data')}"
  wal-dir = "${join(dir, 'wal')}"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:${httpPort}"
  auth-enabled = false
  log-enabled = false

# Nothing the tests need, and each would write to the database or open more ports.
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false

[logging]
  level = "warn"
${extra}
`;
}

export async function startInfluxDb(options: InfluxDbOptions = {}): Promise<InfluxDb> {
  const dataDir = await mkdtemp(join(tmpdir(), 'influxdb-'));
  const configPath = join(dataDir, 'influxdb.conf');
  let port = 0;
  let child: ChildProcess | undefined;
  let logTail = '';

  const launch = async (): Promise<void> => {
    const rpcPort = await freePort();
    await writeFile(configPath, config(dataDir, port, rpcPort, options.extraConfig ?? ''));
    const proc = spawn(BINARY, ['run', '-config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        logTail = (logTail + chunk).slice(-LOG_TAIL_BYTES);
      });
    }
    let exited: Error | undefined;
    proc.once('error', (err) => {
      exited =
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error(`${BINARY} is not installed: apt-get install influxdb`)
          : err;
    });
    proc.once('exit', (code, signal) => {
      exited ??= new Error(`influxd exited (${code ?? signal}) before it was ready:\n${logTail}`);
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (exited) throw exited;
      try {
        const res = await fetch(`http://127.0.0.1:${port}/ping`);
        if (res.status === 204) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        if (proc.pid !== undefined && proc.exitCode === null) process.kill(proc.pid, 'SIGKILL');
        throw new Error(`influxd did not answer /ping within ${START_TIMEOUT_MS} ms:\n${logTail}`);
      }
      await sleep(50);
    }
  };

  // The ports from listen(0) are free only until someone else takes them: retry the race a few times.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test(String(err))) {
        await rm(dataDir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const base = `http://127.0.0.1:${port}`;

  const influx: InfluxDb = {
    url: base,
    port,
    get pid() {
      return child?.pid;
    },
    dataDir,
    async query(q, db) {
      const params = new URLSearchParams({ q, epoch: 'ms' });
      if (db !== undefined) params.set('db', db);
      const res = await fetch(`${base}/query?${params}`);
      const body = (await res.json()) as { results?: InfluxStatementResult[]; error?: string };
      // A query that does not parse is a 400 with a top-level error and no results.
      if (body.error !== undefined) return [{ error: body.error }];
      if (!res.ok || body.results === undefined) return [{ error: `HTTP ${res.status}` }];
      return body.results;
    },
    async write(db, lines, precision = 'ms') {
      const params = new URLSearchParams({ db, precision });
      const res = await fetch(`${base}/write?${params}`, { method: 'POST', body: lines.join('\n') });
      if (res.status !== 204) throw new Error(`write to ${db} failed: ${res.status} ${await res.text()}`);
    },
    async createDatabase(name) {
      // CREATE is refused on GET: 1.x wants a POST for anything that changes state.
      const res = await fetch(`${base}/query`, {
        method: 'POST',
        body: new URLSearchParams({ q: `CREATE DATABASE "${name}"` }),
      });
      const body = (await res.json()) as { results?: InfluxStatementResult[]; error?: string };
      const error = body.error ?? body.results?.[0]?.error;
      if (!res.ok || error !== undefined)
        throw new Error(`CREATE DATABASE ${name} failed: ${error ?? res.status}`);
    },
    async dispose() {
      const proc = child;
      if (proc?.pid !== undefined) {
        const exited = waitExit(proc);
        if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL');
        await exited;
      }
      await rm(dataDir, { recursive: true, force: true });
    },
    log: () => logTail,
  };
  return influx;
}
