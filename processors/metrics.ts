import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { formatDuration } from '../common/duration.js';
import type { AlertTransition } from '../contract/alerts.js';
import type { LeaseRound } from './leases/partition-leases.js';
import { ROLE_NAMES } from './roles.js';
import type { WindowResult } from './windows/device-windows.js';

/**
 * Every bound input can run the processors into, named by the setting that configures it. Each is
 * counted in `processor_limit_reached_total{limit}` when it is hit and has a row in the README's
 * Limits table (a test keeps the three in step).
 */
export const PROCESSOR_LIMITS = [
  'PRESENCE_MAX_CONNECTIONS',
  'PRESENCE_MAX_CLIENT_ID_BYTES',
  'PRESENCE_MAX_STATUS_BYTES',
  'PRESENCE_MAX_GATEWAYS',
  'WINDOW_MAX_METRICS',
  'DEVICE_STATE_TTL',
  'MAX_FREED_DEVICES',
  'CHECKPOINT_MAX_BYTES',
  'FLEET_MAX_ROWS_PER_TENANT',
  'TSDB_MAX_PENDING_LINES',
] as const;
export type ProcessorLimit = (typeof PROCESSOR_LIMITS)[number];
/** Counts `n` hits of a bound (1 when left out). */
export type LimitReached = (limit: ProcessorLimit, n?: number) => void;

/** The processors' Prometheus metrics, on their own registry (several instances may share a process in tests). */
export function createProcessorMetrics(sources: {
  ownedPartitions: () => number;
  pendingLines: () => number;
  lag: () => Promise<Map<number, number>>;
  /** Names of the roles held here that cannot make progress. */
  stalledRoles?: () => readonly string[];
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'processor_' });
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new Counter({ name, help, labelNames, registers: [registry] });

  const events = counter('processor_events_total', 'Canonical events consumed');
  const late = counter(
    'processor_late_events_total',
    'Events too late for a window (kept in raw telemetry only)',
  );
  const duplicates = counter('processor_duplicate_events_total', 'Redelivered events not aggregated again');
  const invalid = counter('processor_invalid_events_total', 'Events or points that could not be processed');
  const windows = counter('processor_windows_emitted_total', 'Window results written', ['window', 'final']);
  const alerts = counter('processor_alerts_total', 'Alert transitions by rule severity and state', [
    'severity',
    'state',
  ]);
  const fleetRows = counter('processor_fleet_rows_total', 'Fleet rollup rows written');
  const fleetSkipped = counter(
    'processor_fleet_skipped_total',
    'Device windows left out of fleet rollups (emitted outside the rollup horizon)',
  );
  const roles = new Gauge({
    name: 'processor_role',
    help: '1 while this instance holds the role (fleet rollup, presence)',
    labelNames: ['role'],
    registers: [registry],
  });
  new Gauge({
    name: 'processor_role_stalled',
    help: '1 while a role held here has been stuck on the same work for ROLE_STALL_TIMEOUT',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      const stalled = new Set(sources.stalledRoles?.() ?? []);
      for (const role of ROLE_NAMES) this.labels(role).set(stalled.has(role) ? 1 : 0);
    },
  });
  const limitReached = counter(
    'processor_limit_reached_total',
    'Times a bound was hit, by the setting that configures it (see the README, Limits)',
    ['limit'],
  );
  // Every limit shows from the start, at 0, so that an alert on it needs no special case.
  // (prom-client's labels() alone creates nothing: only inc(0) makes the child show.)
  const limitChildren = new Map(
    PROCESSOR_LIMITS.map((l) => {
      const child = limitReached.labels(l);
      child.inc(0);
      return [l, child] as const;
    }),
  );
  const presenceRefused = counter(
    'processor_presence_states_refused_total',
    'Presence states NATS refused for good (skipped, not retried; the device keeps its previous state)',
  );
  const checkpoints = counter('processor_checkpoints_total', 'Partition checkpoints saved');
  const retries = counter('processor_tsdb_retries_total', 'TSDB writes retried');
  const rejected = counter('processor_tsdb_rejected_lines_total', 'Lines the TSDB refused for good');
  const writeSeconds = new Histogram({
    name: 'processor_tsdb_write_seconds',
    help: 'Duration of one accepted TSDB write request',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const waitSeconds = new Histogram({
    name: 'processor_tsdb_latency_seconds',
    help: 'Time from handing a point to the writer until the TSDB accepted it',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  const leaseRoundSeconds = new Histogram({
    name: 'processor_lease_round_seconds',
    help: 'Duration of one lease round (heartbeat, renewals, rebalance, claims), by lease group',
    labelNames: ['group'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const leaseRoundGapMax = new Gauge({
    name: 'processor_lease_round_gap_max_seconds',
    help: 'Longest time between two completed lease rounds of this instance since it started (LEASE_TTL is the limit)',
    registers: [registry],
  });
  let leaseRoundGapMaxS = 0;
  leaseRoundGapMax.set(0);
  new Gauge({
    name: 'processor_owned_partitions',
    help: 'Partitions this instance holds a lease on',
    registers: [registry],
    collect() {
      this.set(sources.ownedPartitions());
    },
  });
  new Gauge({
    name: 'processor_tsdb_pending_lines',
    help: 'Lines waiting for the TSDB',
    registers: [registry],
    collect() {
      this.set(sources.pendingLines());
    },
  });
  const checkpointSeq = new Gauge({
    name: 'processor_checkpoint_seq',
    help: 'Last checkpointed stream sequence per owned partition',
    labelNames: ['partition'],
    registers: [registry],
  });
  new Gauge({
    name: 'processor_partition_lag',
    help: 'Messages in the partition not yet delivered to this instance',
    labelNames: ['partition'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [p, pending] of await sources.lag()) this.labels(String(p)).set(pending);
    },
  });

  return {
    registry,
    events: (n: number) => events.inc(n),
    late: (n: number) => late.inc(n),
    duplicates: (n: number) => duplicates.inc(n),
    invalid: (n: number) => invalid.inc(n),
    windowsEmitted: (results: WindowResult[]) => {
      for (const r of results) windows.labels(formatDuration(r.windowMs), String(r.final)).inc();
    },
    alerts: (transitions: readonly AlertTransition[]) => {
      for (const t of transitions) alerts.labels(t.severity, t.state).inc();
    },
    checkpointed: (partition: number, seq: number) => {
      checkpoints.inc();
      checkpointSeq.labels(String(partition)).set(seq);
    },
    released: (partition: number) => checkpointSeq.remove(String(partition)),
    tsdbWritten: (requestMs: number, waitMs: number) => {
      writeSeconds.observe(requestMs / 1000);
      waitSeconds.observe(waitMs / 1000);
    },
    fleetRows: (n: number) => fleetRows.inc(n),
    fleetSkipped: (n: number) => fleetSkipped.inc(n),
    leaseRound: (group: string, round: LeaseRound) => {
      leaseRoundSeconds.labels(group).observe(round.durationMs / 1000);
      if (round.gapMs !== undefined && round.gapMs / 1000 > leaseRoundGapMaxS) {
        leaseRoundGapMaxS = round.gapMs / 1000;
        leaseRoundGapMax.set(leaseRoundGapMaxS);
      }
    },
    role: (name: string, held: boolean) => roles.labels(name).set(held ? 1 : 0),
    tsdbRetry: () => retries.inc(),
    tsdbRejected: (lines: number) => rejected.inc(lines),
    limitReached: ((limit, n = 1) => limitChildren.get(limit)?.inc(n)) as LimitReached,
    presenceRefused: (n: number) => presenceRefused.inc(n),
  };
}

export type ProcessorMetrics = ReturnType<typeof createProcessorMetrics>;
