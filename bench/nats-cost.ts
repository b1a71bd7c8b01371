import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import { type NatsConnection, nanos, type Subscription } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { createLogger, type Logger } from '../common/logger.js';
import { ALERTS_PREFIX } from '../contract/measurements.js';
import {
  DEADLETTER_SUBJECTS,
  PROCESSOR_CHECKPOINTS_BUCKET,
  PROCESSOR_LEASES_BUCKET,
  TELEMETRY_PARTITIONS,
  TELEMETRY_STREAM,
  TELEMETRY_SUBJECTS,
  telemetryPartitionFilter,
  WINDOWS_STREAM,
} from '../contract/subjects.js';
import { DEFAULT_DEDUP_WINDOW_MS, DEFAULT_TELEMETRY_MAX_AGE_MS } from '../gateway/config.js';
import { JetStreamPublisher } from '../gateway/jetstream-publisher.js';
import { LiveFeed } from '../gateway/live/live-feed.js';
import { startLiveSource } from '../gateway/live/live-source.js';
import { LiveSummarizer, startLiveSummaries } from '../gateway/live/live-summary.js';
import { ensureStreams } from '../gateway/streams.js';
import type { NatsServer } from '../test/kit/nats-server.js';
import { startVictoriaMetrics } from '../test/kit/victoria-metrics.js';
import { encodeReading } from './canonical-events.js';
import { killQuietly } from './child-process.js';
import { processCpuSeconds } from './cpu.js';
import { cleanup, hold, isInterrupted, stopOnExit } from './lifecycle.js';
import { heldNatsConnection, heldNatsServer } from './nats.js';
import { numberOption } from './options.js';
import { scrape, startProcessorProcess } from './processors-process.js';
import { resetProcessorState } from './processors-state.js';
import { median } from './stats.js';

/**
 * `npx tsx bench/nats-cost.ts`: what nats-server spends, in CPU per stored event, on each kind of
 * reader of the gateway's events. A live fleet is played into TELEMETRY (canonical events as the
 * gateway builds them, `Nats-Msg-Id` included, published the gateway's way through JetStreamPublisher)
 * at a steady rate, once per configuration: nothing reading, each reader alone, the processors. Each
 * figure is nats-server's utime + stime (/proc) over the publishing plus a short tail (so that readers
 * catch up), divided by the events stored; the configurations run interleaved, order rotated each
 * round, and the medians are printed, with the ratio to "store only".
 */
const HELP = `usage: npx tsx bench/nats-cost.ts [options]
  --rate N           events per second (default 4000)
  --devices D        devices they come from (default 2000)
  --seconds S        publishing per configuration and round (default 20)
  --rounds R         rounds (default 3)
  --gateways G       live views (firehose or summaries) in the live-view configurations (default 3)
  --only LIST        comma-separated configuration names to run (default: all)
  --prefill N        events of another tenant stored before the rounds and kept, so that the stream
                     holds history as in production (default 0; the processors would read it all,
                     so they are left out when N > 0)`;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const TENANT = 'cost';
/** After the last publish and once every reader has read every event: the CPU used in it counts. */
const TAIL_MS = 1_000;
/** A reader that has not read the round's events this long after the last publish fails the round. */
const CATCH_UP_TIMEOUT_MS = 60_000;
/** Between a configuration's start and its measurement: start-up costs stay out. */
const SETTLE_MS = 2_000;
const PUBLISH_TICK_MS = 10;
/** The processors' own pull settings (processors/consume/partition-consumer.ts), for the emulations. */
const PROCESSOR_FETCH = { max_messages: 1_000, expires: 5_000 };
const PROCESSOR_CHECKPOINT_MS = 1_000;

interface Options {
  rate: number;
  devices: number;
  seconds: number;
  rounds: number;
  gateways: number;
  only: string[] | undefined;
  prefill: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '4000' },
      devices: { type: 'string', default: '2000' },
      seconds: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '3' },
      gateways: { type: 'string', default: '3' },
      only: { type: 'string' },
      prefill: { type: 'string', default: '0' },
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
    rate: num('rate', values.rate, 100, 100_000),
    devices: num('devices', values.devices, 1, 1_000_000),
    seconds: num('seconds', values.seconds, 2, 3_600),
    rounds: num('rounds', values.rounds, 1, 100),
    gateways: num('gateways', values.gateways, 1, 64),
    only: values.only?.split(',').map((s) => s.trim()),
    prefill: num('prefill', values.prefill, 0, 50_000_000),
  };
}

stopOnExit('the readers and nats-server');

interface Env {
  nats: NatsServer;
  nc: NatsConnection;
  log: Logger;
  o: Options;
}

/** What a configuration adds while events are published; `stop` undoes it. */
interface Readers {
  /** Called with each event once it is stored (the gateway's own view of its ingest). */
  stored?: (subject: string, data: Uint8Array) => void;
  /** Figures of its own, read after the tail (e.g. WINDOWS messages written). */
  report?: () => Promise<string>;
  /** How many of the round's events it has read: the round waits for all before it reads the CPU. */
  consumed?: () => Promise<number>;
  stop(): Promise<void>;
}

interface Config {
  name: string;
  what: string;
  msgIds?: boolean;
  start(env: Env): Promise<Readers>;
}

const nothing = async (): Promise<Readers> => ({ stop: async () => {} });

/** Connections named and closed however the bench ends. */
async function connections(env: Env, n: number, name: string): Promise<NatsConnection[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => connect({ servers: env.nats.url, name: `${name} ${i}` })),
  );
}

/** TELEMETRY's duplicate window set to `ms` for the round, back to the default after. */
function dedupWindow(ms: number): (env: Env) => Promise<Readers> {
  return async (env) => {
    const jsm = await jetstreamManager(env.nc);
    const set = async (windowMs: number) => {
      const info = await jsm.streams.info(TELEMETRY_STREAM);
      await jsm.streams.update(TELEMETRY_STREAM, { ...info.config, duplicate_window: nanos(windowMs) });
    };
    await set(ms);
    return { stop: () => set(DEFAULT_DEDUP_WINDOW_MS) };
  };
}

/** What each gateway's live view did before: core subscriptions to every event, letter and alert. */
async function firehoseViews(env: Env): Promise<Readers> {
  const ncs = await connections(env, env.o.gateways, 'firehose view');
  let received = 0;
  for (const nc of ncs) {
    for (const subject of [TELEMETRY_SUBJECTS, DEADLETTER_SUBJECTS, `${ALERTS_PREFIX}.>`])
      nc.subscribe(subject, {
        callback: () => {
          received++;
        },
      });
    await nc.flush();
  }
  return {
    report: async () => `${received.toLocaleString('en-US')} deliveries`,
    consumed: async () => received / env.o.gateways,
    stop: async () => {
      await Promise.all(ncs.map((nc) => nc.close()));
    },
  };
}

/** The live view now: each gateway summarises its own ingest once a second; every view reads all summaries. */
async function summaryViews(env: Env): Promise<Readers> {
  const ncs = await connections(env, env.o.gateways, 'summary view');
  const summarizers = ncs.map((_, i) => new LiveSummarizer({ gatewayId: `cost-gw-${i}` }));
  const publishers = ncs.map((nc, i) => startLiveSummaries(nc, summarizers[i]!, env.log));
  const feeds = ncs.map(() => new LiveFeed());
  const sources = ncs.map((nc, i) => startLiveSource(nc, feeds[i]!, env.log));
  await Promise.all(ncs.map((nc) => nc.flush()));
  let next = 0;
  return {
    stored: (subject, data) => {
      summarizers[next]!.onStored(subject, data);
      next = (next + 1) % summarizers.length;
    },
    report: async () => {
      const seen = feeds.map((f) => f.delta()?.message.totals.events ?? 0);
      return `each view counted ${seen.map((n) => n.toLocaleString('en-US')).join(' / ')} events`;
    },
    stop: async () => {
      for (const p of publishers) p.close();
      await Promise.all(sources.map((s) => s.close()));
      await Promise.all(ncs.map((nc) => nc.close()));
    },
  };
}

/**
 * JetStream pull consumers as the processors make them (ack policy all, one ack per checkpoint
 * interval), reading and acknowledging only: what the pulls themselves cost, apart from what the
 * processors do with the events.
 */
function pullConsumers(
  partitioned: boolean,
  fetch: { max_messages: number; expires: number; idle_heartbeat?: number },
): (env: Env) => Promise<Readers> {
  return async (env) => {
    const nc = await connect({ servers: env.nats.url, name: 'cost pull' });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const filters = partitioned
      ? Array.from({ length: TELEMETRY_PARTITIONS }, (_, p) => telemetryPartitionFilter(p))
      : [TELEMETRY_SUBJECTS];
    const names = filters.map((_, i) => `cost_pull_${i}`);
    const iterators: ConsumerMessages[] = [];
    for (const [i, name] of names.entries()) {
      await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
      await jsm.consumers.add(TELEMETRY_STREAM, {
        durable_name: name,
        filter_subject: filters[i]!,
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.New,
        max_ack_pending: -1,
        ack_wait: nanos(10 * 60_000),
      });
      iterators.push(await (await js.consumers.get(TELEMETRY_STREAM, name)).consume(fetch));
    }
    const last: (JsMsg | undefined)[] = iterators.map(() => undefined);
    let count = 0;
    const loops = iterators.map(async (it, i) => {
      for await (const m of it) {
        m.json();
        count++;
        last[i] = m;
      }
    });
    const acker = setInterval(() => {
      last.forEach((m, i) => {
        m?.ack();
        last[i] = undefined;
      });
    }, PROCESSOR_CHECKPOINT_MS);
    return {
      report: async () => `${count.toLocaleString('en-US')} consumed`,
      consumed: async () => count,
      stop: async () => {
        clearInterval(acker);
        for (const it of iterators) it.stop();
        await Promise.all(loops);
        for (const name of names) await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
        await nc.close();
      },
    };
  };
}

/**
 * The same 16 consumers, read another way, to tell what the waiting pull requests cost: `push`, a push
 * consumer per partition delivering to a core subscription (nothing waits on the server); `poll`, a
 * pull request with no_wait every `pollMs` per partition (none waits between polls either).
 */
function otherConsumers(kind: 'push' | 'poll', pollMs = 250): (env: Env) => Promise<Readers> {
  return async (env) => {
    const nc = await connect({ servers: env.nats.url, name: `cost ${kind}` });
    const jsm = await jetstreamManager(nc);
    const names = Array.from({ length: TELEMETRY_PARTITIONS }, (_, p) => `cost_${kind}_${p}`);
    let count = 0;
    const last: (string | undefined)[] = names.map(() => undefined);
    const subs: Subscription[] = [];
    const timers: NodeJS.Timeout[] = [];
    for (const [p, name] of names.entries()) {
      await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
      const inbox = `_COST.${kind}.${p}`;
      await jsm.consumers.add(TELEMETRY_STREAM, {
        durable_name: name,
        filter_subject: telemetryPartitionFilter(p),
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.New,
        max_ack_pending: -1,
        ack_wait: nanos(10 * 60_000),
        ...(kind === 'push' ? { deliver_subject: inbox } : {}),
      });
      subs.push(
        nc.subscribe(inbox, {
          callback: (_, m) => {
            // Status messages (no_wait's 404/408) have no reply subject to ack.
            if (m.reply === undefined || m.reply === '') return;
            m.json();
            count++;
            last[p] = m.reply;
          },
        }),
      );
      if (kind === 'poll') {
        const subject = `$JS.API.CONSUMER.MSG.NEXT.${TELEMETRY_STREAM}.${name}`;
        timers.push(
          setInterval(
            () => nc.publish(subject, JSON.stringify({ batch: 1_000, no_wait: true }), { reply: inbox }),
            pollMs,
          ),
        );
      }
    }
    await nc.flush();
    timers.push(
      setInterval(() => {
        last.forEach((reply, i) => {
          if (reply !== undefined) nc.publish(reply, '+ACK');
          last[i] = undefined;
        });
      }, PROCESSOR_CHECKPOINT_MS),
    );
    return {
      report: async () => `${count.toLocaleString('en-US')} consumed`,
      consumed: async () => count,
      stop: async () => {
        for (const t of timers) clearInterval(t);
        for (const sub of subs) sub.unsubscribe();
        for (const name of names) await jsm.consumers.delete(TELEMETRY_STREAM, name).catch(() => undefined);
        await nc.close();
      },
    };
  };
}

async function streamMessages(
  nc: NatsConnection,
  stream: string,
): Promise<{ messages: number; bytes: number }> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream).catch(() => undefined);
  return { messages: info?.state.messages ?? 0, bytes: info?.state.bytes ?? 0 };
}

/** One processor instance, as production runs it, writing to a VictoriaMetrics of its own. */
async function processors(env: Env): Promise<Readers> {
  await resetProcessorState(env.nc);
  const tsdb = await startVictoriaMetrics();
  const releaseTsdb = hold(
    'victoria-metrics',
    () => tsdb.dispose(),
    () => {
      killQuietly(tsdb.pid);
      rmSync(tsdb.dataDir, { recursive: true, force: true });
    },
  );
  const proc = await startProcessorProcess({
    cwd: REPO_ROOT,
    natsUrl: env.nats.url,
    influxUrl: tsdb.url,
    instanceId: `cost-${randomUUID().slice(0, 8)}`,
  });
  const releaseProc = hold(
    'processor',
    () => proc.stop(isInterrupted() ? 2_000 : undefined),
    () => proc.kill(),
  );
  // Ready once it owns every partition and both roles (the fleet rollup and presence).
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = await scrape(proc.httpPort);
    if (s && s.sum('processor_owned_partitions') === TELEMETRY_PARTITIONS && s.sum('processor_role') >= 2)
      break;
    if (!proc.running) throw new Error(`processor exited:\n${proc.tail()}`);
    if (Date.now() > deadline)
      throw new Error(`processor did not take its partitions in 60 s:\n${proc.tail()}`);
    await sleep(200);
  }
  const kv = `KV_${PROCESSOR_CHECKPOINTS_BUCKET}`;
  const leases = `KV_${PROCESSOR_LEASES_BUCKET}`;
  const before = {
    windows: await streamMessages(env.nc, WINDOWS_STREAM),
    checkpoints: await streamMessages(env.nc, kv),
    leases: await streamMessages(env.nc, leases),
  };
  return {
    report: async () => {
      const s = await scrape(proc.httpPort);
      const windows = await streamMessages(env.nc, WINDOWS_STREAM);
      const checkpoints = await streamMessages(env.nc, kv);
      const events = s?.sum('processor_events_total') ?? 0;
      const w = windows.messages - before.windows.messages;
      const wb = windows.bytes - before.windows.bytes;
      // KV keeps one value per key: its sequence says how many were written.
      const ckInfo = await (await jetstreamManager(env.nc)).streams.info(kv).catch(() => undefined);
      const lsInfo = await (await jetstreamManager(env.nc)).streams.info(leases).catch(() => undefined);
      return (
        `${events.toLocaleString('en-US')} events processed; WINDOWS +${w.toLocaleString('en-US')} msgs ` +
        `(${(w / Math.max(1, events)).toFixed(3)}/event, ${Math.round(wb / Math.max(1, w))} B each); ` +
        `checkpoint puts ${((ckInfo?.state.last_seq ?? 0) - 0).toLocaleString('en-US')} in all, ` +
        `${Math.round(checkpoints.bytes / Math.max(1, checkpoints.messages))} B each; ` +
        `lease puts ${lsInfo?.state.last_seq ?? 0} in all`
      );
    },
    consumed: async () => (await scrape(proc.httpPort))?.sum('processor_events_total') ?? 0,
    stop: async () => {
      await releaseProc();
      await releaseTsdb();
    },
  };
}

const CONFIGS: Config[] = [
  { name: 'store', what: 'nothing reads', start: nothing },
  {
    name: 'store-no-msgid',
    what: 'nothing reads, events without Nats-Msg-Id',
    msgIds: false,
    start: nothing,
  },
  { name: 'store-dedup-10s', what: 'nothing reads, duplicate window 10 s', start: dedupWindow(10_000) },
  { name: 'firehose', what: 'G live views on the firehose (before)', start: firehoseViews },
  { name: 'summaries', what: 'G live views on 1/s summaries (now)', start: summaryViews },
  {
    name: 'pull16',
    what: '16 pull consumers, 1000 / 5 s (the processors’)',
    start: pullConsumers(true, PROCESSOR_FETCH),
  },
  {
    name: 'pull16-30s',
    what: '16 pull consumers, 1000 / 30 s',
    start: pullConsumers(true, { max_messages: 1_000, expires: 30_000 }),
  },
  {
    name: 'pull16-100',
    what: '16 pull consumers, 100 / 5 s',
    start: pullConsumers(true, { max_messages: 100, expires: 5_000 }),
  },
  {
    name: 'pull16-10k',
    what: '16 pull consumers, 10000 / 5 s',
    start: pullConsumers(true, { max_messages: 10_000, expires: 5_000 }),
  },
  { name: 'push16', what: '16 push consumers (no waiting pulls)', start: otherConsumers('push') },
  {
    name: 'poll16',
    what: '16 consumers, a no_wait pull of 1000 every 250 ms',
    start: otherConsumers('poll'),
  },
  {
    name: 'pull1',
    what: '1 pull consumer, all partitions, 1000 / 5 s',
    start: pullConsumers(false, PROCESSOR_FETCH),
  },
  { name: 'processors', what: '1 processor instance (all of it)', start: processors },
];

interface Result {
  config: string;
  round: number;
  stored: number;
  natsCpuS: number;
  usPerMsg: number;
  benchCpuS: number;
  note: string;
}

/** Publishes rate events/s for `seconds`, the gateway's way; resolves once all are answered. */
async function play(env: Env, config: Config, readers: Readers, seq0: number): Promise<{ stored: number }> {
  const { o } = env;
  const nc = await connect({ servers: env.nats.url, name: 'cost publisher' });
  const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log: env.log });
  let stored = 0;
  let failed = 0;
  const total = o.rate * o.seconds;
  const started = performance.now();
  let i = 0;
  try {
    while (i < total) {
      if (isInterrupted()) throw new Error('interrupted');
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * o.rate));
      for (; i < due; i++) {
        const d = i % o.devices;
        const now = Date.now();
        const e = encodeReading(TENANT, d, seq0 + Math.floor(i / o.devices), now, now);
        publisher.publish(
          e.subject,
          e.data,
          config.msgIds === false ? undefined : e.msgId,
          () => true,
          (err) => {
            if (err) failed++;
            else {
              stored++;
              readers.stored?.(e.subject, e.data);
            }
          },
        );
      }
      await sleep(PUBLISH_TICK_MS);
    }
    const left = await publisher.settle(30_000);
    if (left > 0 || failed > 0) throw new Error(`${left} publishes unanswered, ${failed} failed`);
  } finally {
    publisher.close();
    await nc.close();
  }
  return { stored };
}

/** History for the stream: `n` events of tenant `history`, published as fast as acknowledged. */
async function prefill(env: Env, n: number): Promise<void> {
  const nc = await connect({ servers: env.nats.url, name: 'cost prefill' });
  const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 10_000, log: env.log });
  let failed = 0;
  try {
    const t0 = Date.now() - 3_600_000;
    for (let i = 0; i < n; i++) {
      const d = i % env.o.devices;
      const ts = t0 + Math.floor(i / env.o.devices) * 1_000;
      const e = encodeReading('history', d, Math.floor(i / env.o.devices), ts, ts);
      // Without msg ids: their dedup entries would expire during the first rounds, at a cost of their own.
      publisher.publish(
        e.subject,
        e.data,
        undefined,
        () => true,
        (err) => {
          if (err) failed++;
        },
      );
      while (publisher.inFlight >= 8_000) await sleep(5);
    }
    if ((await publisher.settle(60_000)) > 0 || failed > 0) throw new Error('pre-fill incomplete');
  } finally {
    publisher.close();
    await nc.close();
  }
}

async function round(env: Env, config: Config, index: number, seq0: number): Promise<Result> {
  // Readers that start from the beginning (the processors, without a checkpoint) read this round only.
  // With a pre-filled history nothing is purged: the processors are left out, the others read new events.
  if (env.o.prefill === 0) await (await jetstreamManager(env.nc)).streams.purge(TELEMETRY_STREAM);
  const readers = await config.start(env);
  try {
    await sleep(SETTLE_MS);
    const cpu0 = processCpuSeconds(env.nats.pid)!;
    const bench0 = processCpuSeconds(process.pid)!;
    const { stored } = await play(env, config, readers, seq0);
    const deadline = Date.now() + CATCH_UP_TIMEOUT_MS;
    while (readers.consumed) {
      const read = await readers.consumed();
      if (read >= stored) break;
      if (Date.now() > deadline)
        throw new Error(`${config.name}: ${read} of ${stored} events read after 60 s`);
      await sleep(100);
    }
    await sleep(TAIL_MS);
    const natsCpuS = processCpuSeconds(env.nats.pid)! - cpu0;
    const benchCpuS = processCpuSeconds(process.pid)! - bench0;
    const note = (await readers.report?.()) ?? '';
    return {
      config: config.name,
      round: index,
      stored,
      natsCpuS,
      usPerMsg: (natsCpuS / stored) * 1e6,
      benchCpuS,
      note,
    };
  } finally {
    await readers.stop();
  }
}

async function main(): Promise<void> {
  const o = options();
  const log = createLogger('bench', 'warn');
  const nats = await heldNatsServer({ serverName: 'bench_nats_cost' });
  const nc = await heldNatsConnection(nats.url, 'bench');
  const env: Env = { nats, nc, log, o };
  await ensureStreams(
    await jetstreamManager(nc),
    { telemetryMaxAgeMs: DEFAULT_TELEMETRY_MAX_AGE_MS, dedupWindowMs: DEFAULT_DEDUP_WINDOW_MS, replicas: 1 },
    log,
  );
  const configs = (o.only ? CONFIGS.filter((c) => o.only!.includes(c.name)) : CONFIGS).filter(
    (c) => o.prefill === 0 || c.name !== 'processors',
  );
  if (o.prefill > 0) {
    const started = performance.now();
    await prefill(env, o.prefill);
    console.log(
      `pre-filled ${o.prefill.toLocaleString('en-US')} events of tenant "history" in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  }
  if (configs.length === 0)
    throw new Error(`--only matches none of ${CONFIGS.map((c) => c.name).join(', ')}`);
  console.log(
    `nats-cost: ${o.rate.toLocaleString('en-US')} events/s from ${o.devices.toLocaleString('en-US')} devices for ` +
      `${o.seconds} s (then until every reader has read them, +${TAIL_MS / 1000} s) per configuration, ${o.rounds} rounds, G = ${o.gateways}; ` +
      `nats-server ${nc.info?.version}, nproc ${availableParallelism()} (${cpus()[0]?.model.trim()}), Node ${process.version}`,
  );
  const results: Result[] = [];
  // Each round's readings start past the last round's, so no event is a duplicate of an earlier one.
  let seq0 = 0;
  for (let r = 1; r <= o.rounds; r++) {
    const shift = (r - 1) % configs.length;
    for (const c of [...configs.slice(shift), ...configs.slice(0, shift)]) {
      if (isInterrupted()) return;
      const res = await round(env, c, r, seq0);
      seq0 += Math.ceil((o.rate * o.seconds) / o.devices) + 1;
      results.push(res);
      console.log(
        `round ${r}/${o.rounds} ${c.name.padEnd(16)} ${res.usPerMsg.toFixed(1).padStart(6)} µs/msg ` +
          `(nats-server ${res.natsCpuS.toFixed(2)} s CPU for ${res.stored.toLocaleString('en-US')} events; ` +
          `bench ${res.benchCpuS.toFixed(2)} s) ${res.note}`,
      );
    }
  }
  // The machine's load drifts over minutes: each figure is compared with "store" of its own round.
  const storeOf = (round: number) => results.find((r) => r.config === 'store' && r.round === round)?.usPerMsg;
  console.log(
    '\n| configuration | nats-server µs of CPU per event, median (rounds) | × store only, median of the rounds’ ratios |',
  );
  console.log('|---|---|---|');
  for (const c of configs) {
    const rs = results.filter((r) => r.config === c.name);
    const us = rs.map((r) => r.usPerMsg);
    const ratios = rs.map((r) => r.usPerMsg / (storeOf(r.round) ?? Number.NaN));
    const what = c.what.replace('G ', `${o.gateways} `);
    console.log(
      `| ${c.name}: ${what} | ${median(us).toFixed(1)} (${us.map((x) => x.toFixed(1)).join(' / ')}) | ` +
        `${Number.isNaN(median(ratios)) ? '–' : `${median(ratios).toFixed(2)}×`} (${ratios.map((x) => x.toFixed(2)).join(' / ')}) |`,
    );
  }
}

try {
  await main();
} catch (err) {
  if (!isInterrupted()) {
    console.error(`nats-cost bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
} finally {
  if (!isInterrupted()) await cleanup();
}
