import type { NatsConnection } from '@nats-io/nats-core';
import { type RunInput, type RunOptions, resolveRunOptions } from './config.js';
import { DeviceScript, type DeviceSpec } from './device-script.js';
import { NoConnectionError } from './errors.js';
import { Fleet } from './fleet.js';
import { type Ledger, LedgerBook, writeLedger } from './ledger.js';
import { formatSummary, ProgressReporter, RunStats, type RunSummary } from './progress.js';
import { connectRegistryNats, provisionDevices, removeDevices, type SimDeviceIdentity } from './provision.js';
import { DAY_S, Rng } from './signals.js';

/**
 * One simulation, start to end: provision the devices (registry mode), connect them, publish on
 * schedule with the fault mix, wait for the acknowledgements, write the ledger, clean up.
 */
export interface RunHooks {
  /** Aborting ends the run early: devices flush, what is queued is still sent and acknowledged. */
  signal?: AbortSignal;
  /** Where start-up lines go (the CLI passes stderr); silent when absent. */
  log?: (line: string) => void;
  /** Stream for the progress line (default stderr). */
  progressOut?: NodeJS.WritableStream;
  /** Called once every device has had its chance to connect, as publishing starts (benches sample CPU here). */
  onSending?: () => void;
  /** Called when the last publish was acknowledged or the drain timed out, before the ledger is written. */
  onSent?: () => void;
  /** Counters to use (a bench resets their latencies after its warm-up); a new set otherwise. */
  stats?: RunStats;
}

export interface RunResult {
  options: Readonly<RunOptions>;
  summary: RunSummary;
  ledger: Ledger;
  /** formatSummary(summary), for printing. */
  report: string;
}

function deviceSpecs(o: RunOptions): { specs: DeviceSpec[]; identities: SimDeviceIdentity[] } {
  const width = Math.max(4, String(o.devices - 1).length);
  const specs: DeviceSpec[] = [];
  const identities: SimDeviceIdentity[] = [];
  for (let index = 0; index < o.devices; index++) {
    const type = o.types[index % o.types.length]!;
    const id = `${o.runId}-${String(index).padStart(width, '0')}`;
    specs.push({ index, id, type });
    identities.push({ id, tenant: o.tenant, labels: { type, site: `site-${(index % o.sites) + 1}` } });
  }
  return { specs, identities };
}

/** Publishes each device makes: the duration's worth at its rate, or its share of --messages. */
function publishesOf(o: RunOptions, index: number): number {
  if (o.messages !== undefined) {
    const base = Math.floor(o.messages / o.devices);
    return base + (index < o.messages % o.devices ? 1 : 0);
  }
  return Math.max(1, Math.floor((o.durationMs! * o.rate) / 1000));
}

export async function runSimulation(
  input: RunInput | Readonly<RunOptions>,
  hooks: RunHooks = {},
): Promise<RunResult> {
  const options =
    'runId' in input && typeof input.runId === 'string'
      ? (input as RunOptions)
      : resolveRunOptions(input as RunInput);
  const o = options;
  const log = hooks.log ?? (() => {});
  const { specs, identities } = deviceSpecs(o);
  const startedAt = new Date().toISOString();
  const startTodS = new Rng(o.seed, 'fleet').int(0, DAY_S - 1);
  const scripts = specs.map(
    (spec) =>
      new DeviceScript(spec, {
        seed: o.seed,
        schema: o.schema,
        encoding: o.encoding,
        batch: o.batch,
        publishPeriodMs: 1000 / o.rate,
        publishes: publishesOf(o, spec.index),
        faults: o.faults,
        startTodS,
      }),
  );
  const book = new LedgerBook();
  for (const [i, spec] of specs.entries()) {
    // Open auth gives devices no registry labels, so their telemetry carries none.
    book.addDevice(spec.id, spec.type, o.auth === 'open' ? {} : identities[i]!.labels);
  }

  let nc: NatsConnection | undefined;
  let secret: string | undefined;
  const stats = hooks.stats ?? new RunStats();
  try {
    if (o.auth === 'registry') {
      log(`provisioning ${o.devices} devices in the registry (tenant ${o.tenant}) via ${o.natsUrl}`);
      nc = await connectRegistryNats(o.natsUrl);
      secret = await provisionDevices(nc, identities);
    }
    const fleet = new Fleet(
      scripts,
      {
        url: o.url,
        secret,
        qos: o.qos,
        inflight: o.inflight,
        connectConcurrency: o.connectConcurrency,
        drainTimeoutMs: o.drainTimeoutMs,
        runId: o.runId,
      },
      book,
      stats,
    );
    const mode =
      o.progress === 'auto'
        ? ((hooks.progressOut ?? process.stderr) as { isTTY?: boolean }).isTTY
          ? 'tty'
          : 'plain'
        : o.progress;
    let startPerf = performance.now();
    let sending = false;
    const progress = new ProgressReporter(
      mode,
      () => ({
        elapsedMs: performance.now() - startPerf,
        sent: stats.sent,
        acked: stats.acked,
        inFlight: fleet.inFlight(),
        queued: fleet.queued(),
        errors: stats.errorCount,
        reconnects: stats.reconnects,
        lost: stats.lost,
        connected: stats.connected,
        devices: fleet.size,
        durationMs: sending ? o.durationMs : undefined,
      }),
      hooks.progressOut,
    );
    log(`connecting ${o.devices} devices to ${o.url} (run ${o.runId}, seed ${o.seed})`);
    progress.start();
    const connectStart = performance.now();
    const connected = await fleet.connectAll();
    const connectMs = performance.now() - connectStart;
    if (connected === 0) {
      progress.stop();
      await fleet.close();
      const last = [...stats.errors.keys()].at(-1) ?? 'no answer';
      throw new NoConnectionError(o.url, last);
    }
    log(`${connected}/${o.devices} devices connected in ${(connectMs / 1000).toFixed(1)} s; publishing`);
    const t0 = Date.now();
    for (const s of scripts) s.begin(t0);
    startPerf = performance.now();
    sending = true;
    progress.restart();
    fleet.start();
    hooks.onSending?.();
    await fleet.finish(hooks.signal);
    hooks.onSent?.();
    progress.stop();

    const ledger = book.ledger(
      {
        runId: o.runId,
        tenant: o.tenant,
        devicePrefix: `${o.runId}-`,
        seed: o.seed,
        auth: o.auth,
        qos: o.qos,
        promised: o.qos > 0,
        startedAt,
        endedAt: new Date().toISOString(),
        options: { ...o, faults: { ...o.faults }, types: [...o.types] },
      },
      fleet.unackedReadings,
    );
    if (o.ledger !== undefined) await writeLedger(o.ledger, ledger);
    const t = ledger.totals;
    const sendMs = fleet.sendMs;
    const latency = stats.latency.count > 0 ? stats.latency : undefined;
    const summary: RunSummary = {
      runId: o.runId,
      tenant: o.tenant,
      seed: o.seed,
      devices: o.devices,
      connectedDevices: connected,
      qos: o.qos,
      connectMs,
      sendMs,
      sent: t.sent,
      acked: t.acked,
      unacked: t.unacked,
      readings: t.readings,
      retransmissions: t.retransmissions,
      invalid: Object.values(t.invalidAcked).reduce((a, b) => a + b, 0),
      duplicates: t.duplicatesAcked,
      late: t.late,
      outOfOrder: t.outOfOrder,
      fahrenheit: t.fahrenheit,
      cbor: t.cborAcked,
      churnReconnects: t.churnReconnects,
      lostConnections: t.lostConnections,
      offlineDevices: t.offlineDevices,
      dropped: t.dropped,
      errors: Object.fromEntries(stats.errors),
      ackedPerS: sendMs > 0 ? (t.acked * 1000) / sendMs : 0,
      latencyMs: latency && {
        p50: latency.getValueAtQuantile(0.5),
        p99: latency.getValueAtQuantile(0.99),
        max: latency.max,
      },
      ledger: o.ledger,
    };
    return { options, summary, ledger, report: formatSummary(summary) };
  } finally {
    if (nc !== undefined) {
      if (!o.keepDevices && secret !== undefined) {
        await removeDevices(
          nc,
          specs.map((s) => s.id),
        ).catch((err: unknown) => log(`could not remove the run's devices: ${(err as Error).message}`));
      }
      await nc.close().catch(() => {});
    }
  }
}
