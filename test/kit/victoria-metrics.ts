import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  exportSeries as exportFrom,
  type PointSelector,
  type Sample,
  type Series,
  selectorToMatch,
  seriesToSamples,
  type TimeRange,
} from '../../simulators/victoria-metrics.js';
import { freePort } from './processes.js';

// The export client and the sample helpers are shared with the simulator's verifier.
export {
  type DuplicateSample,
  findDuplicates,
  groupSamples,
  metricName,
  type PointSelector,
  type Sample,
  type Series,
  selectorToMatch,
  seriesKey,
  type TimeRange,
} from '../../simulators/victoria-metrics.js';

/**
 * A real VictoriaMetrics (the Debian package's `/usr/bin/victoria-metrics`, v1.79) standing in for
 * InfluxDB 2 in tests: it accepts line protocol on the same `/api/v2/write?org=…&bucket=…&precision=…`
 * call @influxdata/influxdb-client makes. Random loopback port, temp `-storageDataPath`, stopped by
 * pid; `restart()` keeps the data and the port, as a crashed-and-restarted server would.
 *
 * How it differs from InfluxDB, found by experiment on v1.79, and what the kit does about it:
 * - Naming: line `m,tag=v f1=1,f2=2 ts` becomes two series, `m_f1{tag="v"}` and `m_f2{tag="v"}`
 *   (`-influxMeasurementFieldSeparator` is `_`). `org` and `bucket` are not labels; only a `?db=` query
 *   parameter would add a `db` label, and the client never sends one. `measurement_field` is ambiguous
 *   when a measurement has `_` in it (`telemetry_agg_count` also starts with `telemetry_`): select by
 *   field, or by a tag unique to the test.
 * - Duplicates: a second sample with the same series and timestamp is kept beside the first, where
 *   InfluxDB would overwrite it. Reads return every sample; `findDuplicates()` reports them.
 * - Lenience: a line it cannot parse is logged and skipped, the request still answers 204, and a string
 *   field is stored as 0. It never answers 400 for bad line protocol the way InfluxDB does.
 * - Visibility: 204 is sent before the rows are even parsed (the parse runs on a worker pool), and rows
 *   become searchable only at the next internal flush, about 1 s later; `/internal/force_flush` does not
 *   make just-written rows visible on this version. A query run before that caches an empty answer for
 *   its exact label filters (the indexdb tagFilters cache) until the index flushes again, so every read
 *   here adds a never-matching `kit_nonce!="<uuid>"` filter to miss that cache. A single read right
 *   after a write can therefore come back short: wait with `waitForSamples()` or `settle()`.
 * - Time range: samples outside `-retentionPeriod` (the kit sets 100y) or beyond now+2d are dropped;
 *   reads cover 1970 to now+3d.
 */
export interface VictoriaMetricsOptions {
  /** Reuse a data dir (and its series) instead of a fresh temp one; it is then not deleted. */
  dataDir?: string;
  port?: number;
  extraArgs?: string[];
}

export interface Tsdb {
  /** Base URL for @influxdata/influxdb-client's `url` (and for the export API). */
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  readonly dataDir: string;
  readonly running: boolean;
  /** SIGTERM by default: VictoriaMetrics then flushes what it holds before exiting. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops if running, then starts again on the same port and data dir. */
  restart(): Promise<void>;
  /** Stops the server (SIGKILL) and deletes its data dir when the kit made it. */
  dispose(): Promise<void>;
  /** Raw `/api/v1/export` for a series selector, e.g. `{__name__=~"telemetry_agg_.*"}`. */
  exportSeries(match: string, range?: TimeRange): Promise<Series[]>;
  /** Every sample of a measurement (one per field per line), duplicates included, in series then time order. */
  readSamples(selector: PointSelector, range?: TimeRange): Promise<Sample[]>;
  /** Polls `readSamples` until `predicate` holds; throws after timeoutMs with what it last saw. */
  waitForSamples(
    selector: PointSelector,
    predicate: (samples: Sample[]) => boolean,
    timeoutMs?: number,
  ): Promise<Sample[]>;
  /**
   * A barrier: once it resolves, everything VictoriaMetrics answered 204 to before the call is
   * searchable, so a read can prove that something is absent or was not stored twice. It writes a
   * canary sample (`vm_kit_canary_v{nonce}`) into every month partition concerned (the current one and
   * those of `at`: each partition flushes on its own clock) and waits until the canaries are visible;
   * twice, because the first round only proves that parsing queued before it has finished (the 204
   * comes before the parse). Costs two flush cycles, about 2–3 s.
   */
  settle(options?: { at?: readonly number[]; timeoutMs?: number }): Promise<void>;
  /** The last 64 KiB of the server's log (parse errors of skipped lines show up here). */
  log(): string;
}

const BINARY = process.env.VICTORIA_METRICS_BIN ?? '/usr/bin/victoria-metrics';
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 100;
const DEFAULT_WAIT_MS = 10_000;
const LOG_TAIL_BYTES = 64 * 1024;
const CANARY_MEASUREMENT = 'vm_kit_canary';

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startVictoriaMetrics(options: VictoriaMetricsOptions = {}): Promise<Tsdb> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'victoria-metrics-')));
  let port = options.port ?? 0;
  let child: ChildProcess | undefined;
  let logTail = '';

  const launch = async (): Promise<void> => {
    const proc = spawn(
      BINARY,
      [
        `-httpListenAddr=127.0.0.1:${port}`,
        `-storageDataPath=${dataDir}`,
        // Tests write fixed dates; the default 1-month retention silently drops anything older.
        '-retentionPeriod=100y',
        // Query-API users (not export) would otherwise see cached or 30 s-delayed answers.
        '-search.disableCache',
        '-search.latencyOffset=0s',
        ...(options.extraArgs ?? []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child = proc;
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      logTail = (logTail + chunk).slice(-LOG_TAIL_BYTES);
    });
    let exited: Error | undefined;
    proc.once('error', (err) => {
      exited =
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error(`${BINARY} is not installed: apt-get install victoria-metrics`)
          : err;
    });
    proc.once('exit', (code, signal) => {
      exited ??= new Error(`victoria-metrics exited (${code ?? signal}) before it was ready:\n${logTail}`);
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (exited) throw exited;
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        if (res.ok && (await res.text()).trim() === 'OK') return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        if (proc.pid !== undefined && proc.exitCode === null) process.kill(proc.pid, 'SIGKILL');
        throw new Error(`victoria-metrics did not answer /health within ${START_TIMEOUT_MS} ms:\n${logTail}`);
      }
      await sleep(50);
    }
  };

  // The port from listen(0) is free only until someone else takes it: retry the race a few times.
  for (let attempt = 1; ; attempt++) {
    if (options.port === undefined) port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      if (options.port !== undefined || attempt >= 3 || !/address already in use/.test(String(err))) {
        if (ownDir) await rm(dataDir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const base = () => `http://127.0.0.1:${port}`;

  const exportSeries = (match: string, range: TimeRange = {}): Promise<Series[]> =>
    exportFrom(base(), match, range);

  const readSamples = async (selector: PointSelector, range?: TimeRange): Promise<Sample[]> =>
    seriesToSamples(await exportSeries(selectorToMatch(selector), range), selector.measurement);

  const tsdb: Tsdb = {
    get url() {
      return base();
    },
    get port() {
      return port;
    },
    get pid() {
      return child?.pid;
    },
    dataDir,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const proc = child;
      if (!proc || proc.pid === undefined) return;
      const exited = waitExit(proc);
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, signal);
      const timer = setTimeout(() => {
        if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    },
    async restart() {
      await tsdb.stop();
      await launch();
    },
    async dispose() {
      await tsdb.stop('SIGKILL');
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
    exportSeries,
    readSamples,
    async waitForSamples(selector, predicate, timeoutMs = DEFAULT_WAIT_MS) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const samples = await readSamples(selector);
        if (predicate(samples)) return samples;
        if (Date.now() > deadline) {
          throw new Error(
            `${selectorToMatch(selector)} did not reach the expected state within ${timeoutMs} ms; ` +
              `it holds ${samples.length} samples`,
          );
        }
        await sleep(POLL_INTERVAL_MS);
      }
    },
    async settle({ at = [], timeoutMs = DEFAULT_WAIT_MS } = {}) {
      const deadline = Date.now() + timeoutMs;
      const partitions = new Map<string, number>();
      for (const t of [Date.now(), ...at]) {
        const d = new Date(t);
        partitions.set(`${d.getUTCFullYear()}-${d.getUTCMonth()}`, Math.floor(t));
      }
      for (let round = 0; round < 2; round++) {
        const nonce = randomUUID();
        const body = [...partitions.values()].map((t) => `${CANARY_MEASUREMENT},nonce=${nonce} v=1 ${t}`);
        const res = await fetch(`${base()}/api/v2/write?org=kit&bucket=kit&precision=ms`, {
          method: 'POST',
          body: body.join('\n'),
        });
        if (res.status !== 204) throw new Error(`canary write failed: ${res.status} ${await res.text()}`);
        await tsdb.waitForSamples(
          { measurement: CANARY_MEASUREMENT, field: 'v', tags: { nonce } },
          (samples) => samples.length >= partitions.size,
          Math.max(0, deadline - Date.now()),
        );
      }
    },
    log: () => logTail,
  };
  return tsdb;
}
