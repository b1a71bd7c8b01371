import cluster, { type Worker } from 'node:cluster';
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import { AggregatorRegistry, Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { backoffMs } from '../../common/backoff.js';
import { createOpsServer } from '../../common/http-server.js';
import { closeServer, listen } from '../../common/listen.js';
import type { Logger } from '../../common/logger.js';
import { connectNats } from '../../common/nats.js';
import { ChildStartError } from '../../common/service.js';
import { type GatewayConfig, WORKERS_STOP_MARGIN_MS } from '../config.js';
import { createLiveView } from '../live/live-view.js';
import { isGatewayMessage, STATUS_STALE_MS, type ToWorker, type WorkerMetrics } from './messages.js';
import { type WorkerView, workersNotReady } from './worker-readiness.js';

/**
 * GATEWAY_WORKERS above 1: this process is the node:cluster primary. It serves no device itself. It
 * holds the ops HTTP port (one /healthz, /readyz ready only when every worker is, /metrics summed
 * over the workers, and the live view fed from NATS as a single gateway's is), forks the workers,
 * each a whole gateway with its own GATEWAY_ID and NATS connection sharing the MQTT ports, starts a
 * worker again when one exits unasked, and on close drains them all.
 */
export interface Primary {
  readonly id: string;
  readonly ports: { http: number };
  close(): Promise<void>;
}

/** A restarted worker waits 1 s, doubling to 30 s while it keeps failing: a crash loop costs little CPU. */
const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 30_000;
/** A worker ready this long has "recovered": the next crash waits RESTART_MIN_MS again. */
const RESTART_RESET_MS = 60_000;
/** A scrape waits this long for each worker; one that has not answered is left out of that scrape. */
const METRICS_TIMEOUT_MS = 2_000;
/** Incarnation numbers wrap here, so that `{GATEWAY_ID}-w{n}` stays within 32 characters. */
const MAX_INCARNATION = 999_999;

interface Slot {
  readonly slot: number;
  worker: Worker | undefined;
  /** Resolves when the current worker has exited. */
  exited: Promise<void>;
  /** Its gateway is made (it said `gateway:started`). */
  started: boolean;
  gateway: string | undefined;
  status: { notReady: string[]; atMs: number } | undefined;
  readySinceMs: number | undefined;
  failures: number;
  restartAtMs: number | undefined;
  restartTimer: NodeJS.Timeout | undefined;
}

export async function startPrimary(config: GatewayConfig, log: Logger): Promise<Primary> {
  const base = config.GATEWAY_ID ?? `gw-${randomUUID().slice(0, 8)}`;
  const slots: Slot[] = Array.from({ length: config.GATEWAY_WORKERS }, (_, i) => ({
    slot: i + 1,
    worker: undefined,
    exited: Promise.resolve(),
    started: false,
    gateway: undefined,
    status: undefined,
    readySinceMs: undefined,
    failures: 0,
    restartAtMs: undefined,
    restartTimer: undefined,
  }));
  let incarnations = 0;
  let closing = false;
  let uncleanStops = 0;

  // ---- metrics: the primary's own, and every worker's, summed ----
  const own = new Registry();
  // The primary's process (it accepts every connection and passes it on) adds to the workers' figures.
  collectDefaultMetrics({ register: own, prefix: 'gateway_' });
  const restarts = new Counter({
    name: 'gateway_worker_restarts_total',
    help: 'Gateway workers started again after exiting unasked (crash, out of memory, killed)',
    registers: [own],
  });
  new Gauge({
    name: 'gateway_workers',
    help: 'Gateway workers by state: ready, not_ready (starting, or its gateway not ready), down (waiting to be restarted)',
    labelNames: ['state'] as const,
    registers: [own],
    collect() {
      const now = Date.now();
      const counts = { ready: 0, not_ready: 0, down: 0 };
      for (const s of slots) {
        if (s.worker === undefined) counts.down++;
        else if (workersNotReady([view(s)], now, STATUS_STALE_MS).length === 0) counts.ready++;
        else counts.not_ready++;
      }
      for (const [state, n] of Object.entries(counts)) this.labels(state).set(n);
    },
  });
  const missingFromScrape = new Gauge({
    name: 'gateway_workers_missing_from_scrape',
    help: 'Workers that did not answer this scrape in time: the sums leave them out',
    registers: [own],
  });
  // Only the HTTP bounds are the primary's; the workers count every other limit, and all show here.
  const httpLimits = new Counter({
    name: 'gateway_limit_reached_total',
    help: 'Times a bound was hit, by the setting that configures it (see the README, Limits)',
    labelNames: ['limit'] as const,
    registers: [own],
  });

  let requestIds = 0;
  const pendingMetrics = new Map<number, (metrics: WorkerMetrics) => void>();
  const askMetrics = (worker: Worker): Promise<WorkerMetrics | undefined> =>
    new Promise((resolve) => {
      const requestId = ++requestIds;
      const done = (metrics: WorkerMetrics | undefined) => {
        clearTimeout(timer);
        pendingMetrics.delete(requestId);
        worker.off('exit', gone);
        resolve(metrics);
      };
      const gone = () => done(undefined);
      const timer = setTimeout(gone, METRICS_TIMEOUT_MS);
      pendingMetrics.set(requestId, done);
      worker.once('exit', gone);
      try {
        worker.send({ type: 'gateway:metrics?', requestId } satisfies ToWorker);
      } catch {
        gone();
      }
    });
  // A worker's counters start from 0 again when it is restarted. So that their sum never goes down,
  // which Prometheus would take for a reset of the whole gateway's counters (rate() then counts the
  // other workers' totals as new), the counters a worker last reported are kept once it exits, and a
  // worker that does not answer a scrape counts with its previous answer. What a worker counted after
  // its last scrape and before it died is lost from the counts.
  const lastAnswers = new Map<Slot, WorkerMetrics>();
  let retired: Promise<WorkerMetrics> = Promise.resolve([]);
  const retire = (s: Slot) => {
    const last = lastAnswers.get(s);
    lastAnswers.delete(s);
    if (last === undefined) return;
    // prom-client's types say MetricType, an enum of numbers; at run time `type` is the name.
    const counted = last.filter((m) => ['counter', 'histogram'].includes(m.type as unknown as string));
    retired = retired.then((kept) => AggregatorRegistry.aggregate([kept, counted]).getMetricsAsJSON());
  };
  // Not AggregatorRegistry.clusterMetrics(): it fails the whole scrape when one worker does not
  // answer within 5 s, as a worker that is restarting cannot, and it asks prom-client's global
  // registry where ours is per gateway. Its aggregation, by each metric's `aggregator`, is used as is.
  const metrics = {
    contentType: own.contentType,
    async metrics(): Promise<string> {
      const asked = slots.filter((s) => s.worker?.isConnected());
      const answers = await Promise.all(asked.map((s) => askMetrics(s.worker!)));
      let missing = slots.length - asked.length;
      const got = asked.flatMap((s, i) => {
        const answer = answers[i];
        if (answer === undefined) {
          missing++;
          const last = lastAnswers.get(s);
          return last ? [last] : [];
        }
        lastAnswers.set(s, answer);
        return [answer];
      });
      missingFromScrape.set(missing);
      // The workers' first: where a metric is in both, its help and aggregator are the gateway's.
      return AggregatorRegistry.aggregate([...got, await retired, await own.getMetricsAsJSON()]).metrics();
    },
  };

  // ---- readiness ----
  const view = (s: Slot): WorkerView => ({
    slot: s.slot,
    gateway: s.gateway,
    running: s.worker !== undefined,
    restartAtMs: s.restartAtMs,
    status: s.status,
  });
  const notReady = () => [
    ...(closing ? ['shutting down'] : []),
    ...workersNotReady(slots.map(view), Date.now(), STATUS_STALE_MS),
  ];

  // ---- the live view: the whole fleet from NATS, as a single gateway shows it ----
  let nc: NatsConnection | undefined;
  let natsUp = false;
  const live = config.LIVE_VIEW
    ? createLiveView({
        authMode: config.AUTH_MODE,
        operatorToken: config.OPERATOR_TOKEN,
        gatewayId: base,
        natsConnected: () => natsUp,
        log,
      })
    : undefined;

  const http = createOpsServer({
    metrics,
    ready: notReady,
    ...(live ? { routes: live.handle } : {}),
    limits: {
      maxConnections: config.HTTP_MAX_CONNECTIONS,
      requestTimeoutMs: config.HTTP_REQUEST_TIMEOUT_MS,
      dropped: () => httpLimits.labels('HTTP_MAX_CONNECTIONS').inc(),
      timedOut: () => httpLimits.labels('HTTP_REQUEST_TIMEOUT_MS').inc(),
    },
  });
  const httpPort = await listen(http, config.HTTP_PORT, config.BIND_HOST, 'HTTP_PORT').catch(async (err) => {
    await live?.close();
    throw err;
  });
  if (live)
    void connectNats(config.NATS_URL, `gateway ${base} live view`).then(
      (c) => {
        nc = c;
        // Connected only after the close began (NATS was down until then): not wanted any more.
        if (closing) return void c.close();
        natsUp = true;
        void (async () => {
          for await (const status of c.status()) {
            if (status.type === 'disconnect') natsUp = false;
            else if (status.type === 'reconnect') natsUp = true;
          }
        })();
        live.connect(c);
      },
      (err: Error) => log.error({ err: err.message }, 'live view: no NATS connection'),
    );

  // ---- the workers ----
  let startPhase: { resolve: () => void; reject: (err: Error) => void } | undefined;
  const started = new Promise<void>((resolve, reject) => {
    startPhase = { resolve, reject };
  });

  const fork = (s: Slot) => {
    incarnations = (incarnations % MAX_INCARNATION) + 1;
    const gateway = `${base}-w${incarnations}`;
    // GATEWAY_WORKERS=1 in the worker: it is one gateway (and its longer id passes the config check).
    const worker = cluster.fork({ GATEWAY_ID: gateway, GATEWAY_WORKERS: '1' });
    Object.assign(s, { worker, gateway, started: false, status: undefined, readySinceMs: undefined });
    s.restartAtMs = undefined;
    const workerPid = worker.process.pid;
    log.info({ worker: s.slot, gateway, workerPid }, 'worker started');
    worker.on('message', (message: unknown) => {
      if (!isGatewayMessage(message)) return;
      if (message.type === 'gateway:metrics') pendingMetrics.get(message.requestId)?.(message.metrics);
      else if (message.type === 'gateway:status') {
        s.status = { notReady: message.notReady, atMs: Date.now() };
        if (message.notReady.length === 0) s.readySinceMs ??= Date.now();
      } else if (message.type === 'gateway:started') {
        s.started = true;
        if (startPhase && slots.every((x) => x.started)) {
          startPhase.resolve();
          startPhase = undefined;
        }
      }
    });
    s.exited = new Promise<void>((resolve) =>
      worker.once('exit', (code, signal) => {
        resolve();
        s.worker = undefined;
        s.status = undefined;
        retire(s);
        const why = { worker: s.slot, gateway, workerPid, code, signal };
        if (closing) {
          // Still starting, it had no SIGTERM handler yet and died of the signal: it had opened no
          // listener (the gateway opens them last), so it held nothing to drain.
          const unstarted = !s.started && signal === 'SIGTERM';
          if (code !== 0 && !unstarted) {
            uncleanStops++;
            log.warn(why, 'worker stopped uncleanly');
          }
          return;
        }
        if (startPhase) {
          // A worker that cannot start (a port in use, a store too small) has said why on stderr;
          // the others would fail alike: the whole start stops, with its exit code.
          startPhase.reject(new ChildStartError(code || 1, `worker ${s.slot} failed to start`));
          startPhase = undefined;
          return;
        }
        const stable = s.readySinceMs !== undefined && Date.now() - s.readySinceMs >= RESTART_RESET_MS;
        s.failures = stable ? 1 : s.failures + 1;
        const delayMs = backoffMs(s.failures - 1, RESTART_MIN_MS, RESTART_MAX_MS, true);
        s.restartAtMs = Date.now() + delayMs;
        restarts.inc();
        log.error({ ...why, restartInMs: Math.round(delayMs) }, 'worker exited unasked: starting another');
        s.restartTimer = setTimeout(() => {
          s.restartTimer = undefined;
          if (!closing) fork(s);
        }, delayMs);
      }),
    );
  };

  const stopWorkers = async (): Promise<boolean> => {
    for (const s of slots) {
      clearTimeout(s.restartTimer);
      s.restartAtMs = undefined;
      // By pid: each worker runs what a single gateway does on SIGTERM.
      s.worker?.process.kill('SIGTERM');
    }
    const budgetMs = config.SHUTDOWN_GRACE_MS + WORKERS_STOP_MARGIN_MS;
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      Promise.all(slots.map((s) => s.exited)).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), budgetMs);
      }),
    ]);
    clearTimeout(timer);
    if (!inTime)
      for (const s of slots) {
        if (s.worker === undefined) continue;
        log.error({ worker: s.slot, gateway: s.gateway, afterMs: budgetMs }, 'worker did not stop: killed');
        s.worker.process.kill('SIGKILL');
      }
    return inTime;
  };

  // Not waiting for the live view's first connection: with NATS down it would never come.
  const closeRest = async () => {
    await live?.close();
    await nc?.drain().catch(() => nc?.close());
    await closeServer(http);
  };

  for (const s of slots) fork(s);
  try {
    await started;
  } catch (err) {
    closing = true;
    await stopWorkers();
    await closeRest();
    throw err;
  }
  log.info({ gateway: base, workers: slots.length, http: httpPort }, 'gateway workers started');

  let closed: Promise<void> | undefined;
  return {
    id: base,
    ports: { http: httpPort },
    close() {
      closed ??= (async () => {
        closing = true;
        const inTime = await stopWorkers();
        await closeRest();
        if (!inTime || uncleanStops > 0) throw new Error('a worker did not stop cleanly');
        log.info('gateway stopped');
      })();
      return closed;
    },
  };
}
