import { randomUUID } from 'node:crypto';
import { type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { backoffMs } from '../common/backoff.js';
import { ConfigError } from '../common/config.js';
import { createOpsServer } from '../common/http-server.js';
import { closeServer, listen } from '../common/listen.js';
import type { Logger } from '../common/logger.js';
import { connectNats } from '../common/nats.js';
import {
  PROCESSOR_CHECKPOINTS_BUCKET,
  TELEMETRY_PARTITIONS,
  TELEMETRY_STREAM,
} from '../contract/subjects.js';
import { loadAlertRules } from './alerts/alert-rules.js';
import type { ProcessorConfig } from './config.js';
import { consumerName, PartitionConsumer } from './consume/partition-consumer.js';
import { fleetRowsWriter, InfluxEffects } from './effects.js';
import { InfluxWriteRejectedError } from './errors.js';
import { fencedKv } from './leases/fenced-kv.js';
import { type KeptGroup, LeaseKeeper } from './leases/lease-keeper.js';
import { createProcessorMetrics, type ProcessorMetrics } from './metrics.js';
import { PresenceOwner } from './presence/presence-owner.js';
import { type PresenceLimits, presenceStateMaxBytes } from './presence/presence-tracker.js';
import {
  FLEET_ROLLUP_ROLE,
  PRESENCE_ROLE,
  ROLE_NAMES,
  ROLES_LEASE_GROUP,
  type Role,
  type RoleRunner,
  roleRunner,
} from './roles.js';
import { DEFAULT_ROLLUP_HORIZON_MS } from './rollups/fleet-rollup.js';
import { RollupOwner } from './rollups/rollup-owner.js';
import { ensureWindowsStream } from './rollups/windows-stream.js';
import { deviceStatusLine } from './sink/lines.js';
import { TsdbSink } from './sink/tsdb-sink.js';
import type { PartitionWindowSettings } from './windows/partition-windows.js';

export interface Processor {
  readonly instanceId: string;
  readonly httpPort: number;
  readonly metrics: ProcessorMetrics;
  /** Partitions this instance consumes now. */
  partitions(): number[];
  notReady(): string[];
  /** Stops consuming, writes and checkpoints what it has, gives its leases back. */
  close(): Promise<void>;
}

const STREAM_POLL_MS = 1_000;
const RESTART_MIN_DELAY_MS = 100;
const RESTART_MAX_DELAY_MS = 5_000;
/** For gateways known from saved presence state but not heard yet: the gateway's default interval. */
const DEFAULT_GATEWAY_HEARTBEAT_MS = 5_000;
/** How long close() waits for in-flight batches to become durable before giving up on them. */
const SHUTDOWN_GRACE_MS = 5_000;
/** The lease group of the telemetry partitions (`partitions.lease.{p}` in `processor_leases`). */
export const PARTITIONS_LEASE_GROUP = 'partitions';

/**
 * The gateway creates TELEMETRY (it owns the stream's settings). A processor started first waits
 * for it instead of failing every partition it claims.
 */
async function waitForStream(jsm: JetStreamManager, log: Logger, cancelled: () => boolean): Promise<void> {
  let logged = false;
  while (!cancelled()) {
    const exists = await jsm.streams.info(TELEMETRY_STREAM).then(
      () => true,
      () => false,
    );
    if (exists) return;
    if (!logged) log.warn({ stream: TELEMETRY_STREAM }, 'waiting for the gateway to create the stream');
    logged = true;
    await new Promise((r) => setTimeout(r, STREAM_POLL_MS));
  }
}

function presenceLimits(config: ProcessorConfig): PresenceLimits {
  return {
    maxConnections: config.PRESENCE_MAX_CONNECTIONS,
    maxClientIdBytes: config.PRESENCE_MAX_CLIENT_ID_BYTES,
    maxStatusBytes: config.PRESENCE_MAX_STATUS_BYTES,
    maxGateways: config.PRESENCE_MAX_GATEWAYS,
  };
}

/** A KV put sends its subject and headers with the value. */
const KV_PUT_OVERHEAD_BYTES = 1_024;

/**
 * Settings whose product must fit what the NATS server accepts in one message (its max_payload,
 * 1 MiB unless configured): checked once connected, so that a bad combination stops the start
 * instead of being refused, message after message, at run time.
 */
export function checkServerLimits(config: ProcessorConfig, maxPayload: number | undefined): void {
  if (maxPayload === undefined) return;
  const problems: string[] = [];
  const presence = presenceStateMaxBytes(presenceLimits(config));
  if (presence > maxPayload)
    problems.push(
      `PRESENCE_MAX_CONNECTIONS, PRESENCE_MAX_CLIENT_ID_BYTES, PRESENCE_MAX_STATUS_BYTES: a device's presence state may take ${presence} bytes, over the NATS server's max_payload (${maxPayload})`,
    );
  if (config.CHECKPOINT_MAX_BYTES > maxPayload - KV_PUT_OVERHEAD_BYTES)
    problems.push(
      `CHECKPOINT_MAX_BYTES: ${config.CHECKPOINT_MAX_BYTES} is over what the NATS server takes in one message (max_payload ${maxPayload}, less ${KV_PUT_OVERHEAD_BYTES} for the KV put)`,
    );
  if (problems.length > 0) throw new ConfigError(problems);
}

/**
 * A processor instance: holds leases on some telemetry partitions and runs one PartitionConsumer
 * per partition it holds. Start as many as you like; they share the partitions.
 */
export async function createProcessor(config: ProcessorConfig, log: Logger): Promise<Processor> {
  const instanceId = config.INSTANCE_ID ?? `proc-${randomUUID().slice(0, 8)}`;
  // Rules are read before anything connects: a bad file stops the start with every problem listed.
  const rules = config.ALERT_RULES_FILE ? loadAlertRules(config.ALERT_RULES_FILE) : [];
  const consumers = new Map<number, PartitionConsumer>();
  let nc: NatsConnection | undefined;
  /** Lag queries on a connection of their own: on the data connection they queue behind deliveries. */
  let control: NatsConnection | undefined;
  /** Partition and role leases, kept in a worker thread with its own NATS connection (lease-keeper.ts). */
  let leases: LeaseKeeper | undefined;
  let roles: RoleRunner | undefined;
  let sink: TsdbSink | undefined;
  let effects: InfluxEffects | undefined;
  let closing = false;
  let timer: NodeJS.Timeout | undefined;

  const metrics = createProcessorMetrics({
    stalledRoles: () => roles?.stalled().map((s) => s.role) ?? [],
    ownedPartitions: () => consumers.size,
    pendingLines: () => sink?.pendingLines ?? 0,
    lag: async () => {
      const lag = new Map<number, number>();
      if (!control) return lag;
      const jsm = await jetstreamManager(control);
      for (const p of consumers.keys()) {
        const info = await jsm.consumers.info(TELEMETRY_STREAM, consumerName(p)).catch(() => undefined);
        if (info) lag.set(p, info.num_pending);
      }
      return lag;
    },
  });
  const notReady = () => {
    const missing: string[] = [];
    if (closing) missing.push('shutting down');
    if (!nc || nc.isClosed() || !control || control.isClosed()) missing.push('nats');
    if (!leases) missing.push('leases');
    else if (leases.notKept) missing.push(leases.notKept);
    if (sink?.overloaded) missing.push('tsdb');
    for (const { role, reason } of roles?.stalled() ?? []) missing.push(`${role}: ${reason}`);
    for (const consumer of consumers.values()) {
      const blocked = consumer.checkpointBlocked;
      if (blocked !== undefined) missing.push(blocked);
    }
    return missing;
  };
  const http = createOpsServer({ metrics: metrics.registry, ready: notReady });
  const httpPort = await listen(http, config.HTTP_PORT, config.BIND_HOST, 'HTTP_PORT');

  try {
    sink = new TsdbSink({
      url: config.INFLUX_URL,
      token: config.INFLUX_TOKEN,
      org: config.INFLUX_ORG,
      bucket: config.INFLUX_BUCKET,
      highWaterLines: config.TSDB_MAX_PENDING_LINES,
      logger: log,
      observer: {
        batchWritten: (e) => metrics.tsdbWritten(e.requestMs, e.waitMs),
        retry: () => metrics.tsdbRetry(),
        writeRejected: (e) => metrics.tsdbRejected(e.lines),
      },
    });
    log.info({ nats: config.NATS_URL, instance: instanceId }, 'connecting to NATS');
    nc = await connectNats(config.NATS_URL, `processor ${instanceId}`);
    control = await connectNats(config.NATS_URL, `processor ${instanceId} control`);
    checkServerLimits(config, nc.info?.max_payload);
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const checkpoints = await new Kvm(nc).create(PROCESSOR_CHECKPOINTS_BUCKET, {
      history: 1,
      replicas: config.STREAM_REPLICAS,
    });
    await waitForStream(jsm, log, () => closing);
    // A window is emitted between its end and its final emission, lateness + idle timeout later:
    // the rollup horizon covers that twice over, and at least the default.
    const horizonMs = Math.max(
      DEFAULT_ROLLUP_HORIZON_MS,
      2 * (config.WINDOWS.at(-1)! + config.ALLOWED_LATENESS + config.IDLE_TIMEOUT),
    );
    await ensureWindowsStream(jsm, { replicas: config.STREAM_REPLICAS, horizonMs }, log);
    const partitionEffects = new InfluxEffects({
      sink,
      nc,
      js,
      log,
      onInvalid: metrics.invalid,
      publishWindows: true,
    });
    effects = partitionEffects;
    const windows: PartitionWindowSettings = {
      sizesMs: config.WINDOWS,
      allowedLatenessMs: config.ALLOWED_LATENESS,
      idleTimeoutMs: config.IDLE_TIMEOUT,
      maxMetrics: config.WINDOW_MAX_METRICS,
      deviceStateTtlMs: config.DEVICE_STATE_TTL,
      maxFreedDevices: config.MAX_FREED_DEVICES,
    };

    const startPartition = (partition: number) =>
      PartitionConsumer.start({
        partition,
        js,
        jsm,
        // A consumer that outlived its lease (this thread stalled past it) must not checkpoint.
        checkpoints: fencedKv(
          checkpoints,
          `${PARTITIONS_LEASE_GROUP}.${partition}`,
          () => leases?.holds(PARTITIONS_LEASE_GROUP, partition) ?? false,
        ),
        effects: partitionEffects,
        windows,
        rules,
        alertOptions: { deviceStateTtlMs: config.DEVICE_STATE_TTL, maxForgotten: config.MAX_FREED_DEVICES },
        checkpointIntervalMs: config.CHECKPOINT_INTERVAL,
        checkpointMaxBytes: config.CHECKPOINT_MAX_BYTES,
        onLimit: metrics.limitReached,
        log,
        observer: metrics,
        onFailure: (p) => void restartPartition(p),
      });
    // A failed consumer is replaced by a fresh one from the saved checkpoint, for as long as this
    // instance still holds the partition.
    const restartPartition = async (partition: number) => {
      for (let attempt = 0; !closing && consumers.has(partition); attempt++) {
        const failed = consumers.get(partition)!;
        await failed.stop().catch(() => undefined);
        await new Promise((r) =>
          setTimeout(r, backoffMs(attempt, RESTART_MIN_DELAY_MS, RESTART_MAX_DELAY_MS)),
        );
        if (closing || consumers.get(partition) !== failed) return;
        // Recreating the consumer deletes the durable one: never while someone else may own it.
        if (!leases?.holds(PARTITIONS_LEASE_GROUP, partition)) {
          log.warn({ partition }, 'partition consumer not restarted: its lease has lapsed');
          return;
        }
        try {
          consumers.set(partition, await startPartition(partition));
          log.warn({ partition }, 'partition consumer restarted from its checkpoint');
          return;
        } catch (err) {
          log.error({ partition, err }, 'partition consumer could not restart; retrying');
        }
      }
    };
    const partitionLeases: KeptGroup = {
      group: PARTITIONS_LEASE_GROUP,
      partitions: TELEMETRY_PARTITIONS,
      onAcquire: async (partition) => {
        consumers.set(partition, await startPartition(partition));
      },
      onRelease: async (partition) => {
        const consumer = consumers.get(partition);
        consumers.delete(partition);
        await consumer?.stop(); // writes a last checkpoint: drop the partition's gauge after it
        metrics.released(partition);
      },
    };
    const rollupRole: Role = {
      name: FLEET_ROLLUP_ROLE,
      start: () =>
        RollupOwner.start({
          nc: nc!,
          horizonMs,
          write: fleetRowsWriter(sink!, log, metrics.invalid),
          log,
          observer: { rows: metrics.fleetRows, skipped: metrics.fleetSkipped, invalid: metrics.invalid },
          maxRowsPerTenant: config.FLEET_MAX_ROWS_PER_TENANT,
          onLimit: metrics.limitReached,
          stallTimeoutMs: config.ROLE_STALL_TIMEOUT,
        }),
    };
    const presenceLease = ROLE_NAMES.indexOf(PRESENCE_ROLE);
    const presenceRole: Role = {
      name: PRESENCE_ROLE,
      start: () =>
        PresenceOwner.start({
          nc: nc!,
          // Like a partition's: no checkpoint over the next owner's once the role's lease lapsed.
          checkpoints: fencedKv(
            checkpoints,
            `${ROLES_LEASE_GROUP}.${presenceLease}`,
            () => leases?.holds(ROLES_LEASE_GROUP, presenceLease) ?? false,
          ),
          replicas: config.STREAM_REPLICAS,
          defaultHeartbeatIntervalMs: DEFAULT_GATEWAY_HEARTBEAT_MS,
          tickIntervalMs: config.CHECKPOINT_INTERVAL,
          write: (rows) =>
            sink!.ordered.write(rows.map(deviceStatusLine)).catch((err: unknown) => {
              // A row the TSDB refuses for good would otherwise stall presence for ever.
              if (!(err instanceof InfluxWriteRejectedError)) throw err;
              log.error({ err, rows: rows.length }, 'device status refused by the TSDB');
              metrics.invalid(rows.length);
            }),
          log,
          limits: presenceLimits(config),
          onLimit: metrics.limitReached,
          onRefused: metrics.presenceRefused,
          stallTimeoutMs: config.ROLE_STALL_TIMEOUT,
        }),
    };
    const roleList = [rollupRole, presenceRole]; // in ROLE_NAMES order: the index is the lease
    roles = roleRunner(roleList, { log, onChange: metrics.role });
    leases = await LeaseKeeper.start({
      natsUrl: config.NATS_URL,
      instanceId,
      ttlMs: config.LEASE_TTL,
      replicas: config.STREAM_REPLICAS,
      log,
      logFormat: config.LOG_FORMAT,
      onRound: metrics.leaseRound,
      groups: [
        partitionLeases,
        {
          group: ROLES_LEASE_GROUP,
          partitions: roleList.length,
          onAcquire: roles.onAcquire,
          onRelease: roles.onRelease,
        },
      ],
    });
    timer = setInterval(() => {
      for (const consumer of consumers.values()) consumer.flushWindows();
    }, config.CHECKPOINT_INTERVAL);
    log.info({ instance: instanceId, http: httpPort, rules: rules.length }, 'processor started');
  } catch (err) {
    await leases?.stop().catch(() => undefined);
    await sink?.close().catch(() => undefined);
    await nc?.close();
    await control?.close();
    await closeServer(http);
    throw err;
  }

  let closed: Promise<void> | undefined;
  return {
    instanceId,
    httpPort,
    metrics,
    partitions: () => [...consumers.keys()].sort((a, b) => a - b),
    notReady,
    close() {
      closed ??= (async () => {
        closing = true;
        clearInterval(timer);
        // Stopping a partition waits until its batches are durable. If the TSDB (or NATS) is away that
        // never happens: after the grace period the writers give up, those batches count as not
        // written, the partitions checkpoint what was, and their leases are released.
        const giveUp = setTimeout(() => {
          effects?.close();
          void sink?.close(0);
        }, SHUTDOWN_GRACE_MS);
        await leases?.stop();
        clearTimeout(giveUp);
        const result = await sink?.close();
        if (result && result.unwrittenLines > 0) {
          log.warn(
            { lines: result.unwrittenLines },
            'TSDB unreachable at shutdown: unacknowledged events will be replayed',
          );
        }
        await nc?.drain().catch(() => nc?.close());
        await control?.drain().catch(() => control?.close());
        await closeServer(http);
        log.info('processor stopped');
      })();
      return closed;
    },
  };
}
