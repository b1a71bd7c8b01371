import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { createOpsServer } from '../common/http-server.js';
import { closeServer, listen, stopAccepting } from '../common/listen.js';
import type { Logger } from '../common/logger.js';
import { connectNats } from '../common/nats.js';
import { deviceOfClientId } from '../contract/ids.js';
import { DeviceBroker } from './broker/device-broker.js';
import { GatewayChildren } from './broker/gateway-children.js';
import { CommandTracker } from './command-tracker.js';
import type { GatewayConfig } from './config.js';
import { startDownlink } from './downlink.js';
import { ControlRateError } from './errors.js';
import { GatewayDirectory } from './gateway-directory.js';
import { type Heartbeat, startHeartbeat } from './heartbeat.js';
import { createHttpIngestServer } from './http-ingest/http-ingest-server.js';
import { TelemetryHandler } from './ingest/telemetry-handler.js';
import { JetStreamPublisher } from './jetstream-publisher.js';
import { createConnectionPolicy } from './limits/connection-policy.js';
import { limitControlPackets } from './limits/control-rate.js';
import { watchStreamDiscards } from './limits/stream-discards.js';
import { type MqttListeners, startListeners } from './listeners.js';
import { type LiveSummaries, LiveSummarizer, startLiveSummaries } from './live/live-summary.js';
import { createLiveView, type LiveView } from './live/live-view.js';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.js';
import { PresencePublisher } from './presence.js';
import { DeviceRegistry, openRegistryBucket } from './registry/device-registry.js';
import { RegistryCache } from './registry/registry-cache.js';
import { VerifiedSecrets } from './registry/secrets.js';
import { SessionStore } from './sessions/session-store.js';
import { sparkplugCommandFor } from './sparkplug/commands.js';
import { EdgeNodes } from './sparkplug/edge-nodes.js';
import { edgeSessionLimits } from './sparkplug/edge-session.js';
import { ensureStreams, STREAM_BYTE_LIMITS } from './streams.js';
import { startTakeover, type Takeover } from './takeover.js';

export interface Gateway {
  readonly id: string;
  /** `http` is undefined for a worker, whose ops port the cluster primary serves. */
  readonly ports: {
    mqtt: number;
    ws: number;
    mqtts: number | undefined;
    http: number | undefined;
    /** HTTP ingest (gateway/http-ingest/); undefined unless HTTP_INGEST_PORT is set. */
    httpIngest: number | undefined;
  };
  readonly metrics: GatewayMetrics;
  /** What keeps the gateway from being ready; empty when it is. */
  notReady(): string[];
  /** Stops accepting, drains in-flight publishes (up to SHUTDOWN_GRACE_MS), disconnects, closes. */
  close(): Promise<void>;
}

export interface GatewayOptions {
  /**
   * False for a worker of a cluster (gateway/workers/): no ops HTTP server and no live view of its
   * own; the primary serves both, and asks the worker for its readiness and metrics.
   */
  http?: boolean;
}

/** How often DEADLETTER and PRESENCE are looked at for messages discarded at their byte limits. */
const STREAM_WATCH_INTERVAL_MS = 5_000;

/**
 * Starts the ops HTTP server first (so /readyz answers while dependencies come up), then waits for
 * NATS, provisions streams and the registry, and opens the MQTT listeners last: no device is
 * accepted before the gateway can store what it sends.
 */
export async function createGateway(
  config: GatewayConfig,
  log: Logger,
  options: GatewayOptions = {},
): Promise<Gateway> {
  const serveHttp = options.http ?? true;
  const id = config.GATEWAY_ID ?? `gw-${randomUUID().slice(0, 8)}`;
  let publisher: JetStreamPublisher | undefined;
  let nc: NatsConnection | undefined;
  let registry: RegistryCache | undefined;
  let listeners: MqttListeners | undefined;
  let broker: DeviceBroker | undefined;
  let heartbeat: Heartbeat | undefined;
  let summaries: LiveSummaries | undefined;
  let takeover: Takeover | undefined;
  let telemetry: TelemetryHandler | undefined;
  let discards: { close(): void } | undefined;
  let ingest: Server | HttpsServer | undefined;
  let ingestPort: number | undefined;
  let closing = false;

  const metrics = createGatewayMetrics({
    inFlight: () => publisher?.inFlight ?? 0,
    natsConnected: () => publisher?.isConnected ?? false,
    connections: () => broker?.connectedClients ?? 0,
    refusals: () => publisher?.refusals() ?? [],
    registryRevision: () => registry?.revision ?? 0,
  });
  const notReady = () => {
    const missing: string[] = [];
    if (closing) missing.push('shutting down');
    if (!publisher?.isConnected) missing.push('nats');
    // Connected, but nothing can be stored: every device would wait for a PUBACK that does not come.
    for (const r of publisher?.refusals() ?? []) missing.push(`jetstream ${r.stream}: ${r.reason}`);
    const silentMs = publisher?.unansweredForMs();
    if (silentMs !== undefined) missing.push(`jetstream: no answer for ${Math.round(silentMs / 1000)} s`);
    if (config.AUTH_MODE === 'registry' && registry === undefined) missing.push('registry');
    if (listeners === undefined) missing.push('mqtt listeners');
    if (config.HTTP_INGEST_PORT !== undefined && ingestPort === undefined)
      missing.push('http ingest listener');
    return missing;
  };
  const live: LiveView | undefined =
    config.LIVE_VIEW && serveHttp
      ? createLiveView({
          authMode: config.AUTH_MODE,
          operatorToken: config.OPERATOR_TOKEN,
          gatewayId: id,
          natsConnected: () => publisher?.isConnected ?? false,
          log,
        })
      : undefined;
  const http: Server | undefined = serveHttp
    ? createOpsServer({
        metrics: metrics.registry,
        ready: notReady,
        ...(live ? { routes: live.handle } : {}),
        limits: {
          maxConnections: config.HTTP_MAX_CONNECTIONS,
          requestTimeoutMs: config.HTTP_REQUEST_TIMEOUT_MS,
          dropped: () => metrics.limitReached('HTTP_MAX_CONNECTIONS'),
          timedOut: () => metrics.limitReached('HTTP_REQUEST_TIMEOUT_MS'),
        },
      })
    : undefined;
  const httpPort =
    http &&
    (await listen(http, config.HTTP_PORT, config.BIND_HOST, 'HTTP_PORT').catch(async (err) => {
      await live?.close();
      throw err;
    }));

  try {
    log.info({ nats: config.NATS_URL }, 'connecting to NATS');
    nc = await connectNats(config.NATS_URL, `gateway ${id}`);
    live?.connect(nc);
    const jsm = await jetstreamManager(nc);
    await ensureStreams(
      jsm,
      {
        telemetryMaxAgeMs: config.TELEMETRY_MAX_AGE_MS,
        dedupWindowMs: config.DEDUP_WINDOW_MS,
        replicas: config.STREAM_REPLICAS,
        deadletterMaxBytes: config.DEADLETTER_MAX_BYTES,
        presenceMaxBytes: config.PRESENCE_MAX_BYTES,
      },
      log,
    );
    discards = watchStreamDiscards({
      jsm,
      streams: STREAM_BYTE_LIMITS,
      intervalMs: STREAM_WATCH_INTERVAL_MS,
      discarded: (_stream, setting, n) => metrics.limitReached(setting, n),
      log,
    });
    publisher = new JetStreamPublisher(nc, {
      ackTimeoutMs: config.ACK_TIMEOUT_MS,
      log,
      observer: {
        stored: (seconds) => metrics.ackLatency(seconds),
        retried: (cause) => metrics.retries.labels(cause).inc(),
      },
    });
    const verified = new VerifiedSecrets(config.AUTH_VERIFIED_MAX_DEVICES, () =>
      metrics.limitReached('AUTH_VERIFIED_MAX_DEVICES'),
    );
    let cache: RegistryCache | undefined;
    let children: GatewayChildren | undefined;
    if (config.AUTH_MODE === 'registry') {
      const kv = await openRegistryBucket(nc, config.STREAM_REPLICAS);
      cache = new RegistryCache(kv, log, (deviceId, record, previous) => {
        if (previous === undefined) return;
        verified.forget(deviceId);
        const changed =
          record === undefined ||
          record.disabled ||
          record.secretHash !== previous.secretHash ||
          record.tenant !== previous.tenant ||
          JSON.stringify(record.labels) !== JSON.stringify(previous.labels) ||
          JSON.stringify(record.gateway) !== JSON.stringify(previous.gateway);
        if (changed)
          broker?.disconnectDevice(deviceId, record === undefined ? 'removed' : 'registry changed');
      });
      await cache.start();
      log.info({ devices: cache.size }, 'device registry loaded');
      // Registers gateway devices' new children in the same bucket (create-if-absent).
      const registryWriter = new DeviceRegistry(kv);
      children = new GatewayChildren({
        registry: cache,
        register: (childId, tenant, via) => registryWriter.addChild(childId, tenant, via),
        lookup: (childId) => registryWriter.get(childId),
        maxChildren: config.GATEWAY_DEVICE_MAX_CHILDREN,
        metrics,
        log,
      });
    } else {
      log.warn(
        'AUTH_MODE=open: ANY client may connect and publish as any device. For demos only, never in production.',
      );
    }
    // Every gateway summarises what it stored for the live views, its own and the others' (also with
    // LIVE_VIEW=false: another gateway's view shows this one's traffic); one small message a second.
    const summarizer = new LiveSummarizer({ gatewayId: id });
    summaries = startLiveSummaries(nc, summarizer, log);
    telemetry = new TelemetryHandler(publisher, config, metrics, log, (subject, data) =>
      summarizer.onStored(subject, data),
    );
    const presence = new PresencePublisher(publisher, id, log, {
      statusMaxBytes: config.STATUS_MAX_PAYLOAD_BYTES,
      statusTruncated: () => metrics.limitReached('STATUS_MAX_PAYLOAD_BYTES'),
    });
    const connections = createConnectionPolicy(config, metrics, log);
    const tracker = new CommandTracker();
    const sessions = new SessionStore({
      maxQueued: config.MAX_QUEUED_MESSAGES,
      expiryMs: config.SESSION_EXPIRY_MS,
      maxSubscriptions: config.MAX_SUBSCRIPTIONS_PER_CLIENT,
      maxAwayPerDevice: config.MAX_SESSIONS_PER_DEVICE,
      deviceOfClient: config.AUTH_MODE === 'registry' ? deviceOfClientId : undefined,
      ...(children ? { children } : {}),
      events: {
        queued: (_clientId, packet) => tracker.queued(packet),
        backlogged: (clientId, packet) => {
          tracker.backlogged(packet);
          metrics.limitReached('MAX_QUEUED_MESSAGES');
          log.debug(
            { clientId, limit: config.MAX_QUEUED_MESSAGES },
            'persistent session holds its bound of unacknowledged commands: command not sent',
          );
        },
        queueFull: (clientId, packet) => {
          tracker.queueFull(packet);
          metrics.limitReached('MAX_QUEUED_MESSAGES');
          log.debug({ clientId, limit: config.MAX_QUEUED_MESSAGES }, 'session queue full: command dropped');
        },
        evicted: (clientId) => {
          metrics.limitReached('MAX_SESSIONS_PER_DEVICE');
          log.info(
            { clientId, limit: config.MAX_SESSIONS_PER_DEVICE },
            'persistent session forgotten for a newer one',
          );
        },
        expired: (clientId) => {
          metrics.limitReached('SESSION_EXPIRY_MS');
          log.info({ clientId, afterMs: config.SESSION_EXPIRY_MS }, 'persistent session expired');
        },
      },
    });
    metrics.limitSources.sessionsAway = () => sessions.away;
    const edgeNodes = children ? new EdgeNodes(edgeSessionLimits(config), Date.now) : undefined;
    broker = await DeviceBroker.create({
      config,
      registry: cache,
      ...(children ? { children } : {}),
      ...(edgeNodes ? { edgeNodes } : {}),
      verified,
      telemetry,
      presence,
      metrics,
      log,
      ready: (clientId) => takeover?.announce(clientId),
      aedesOptions: {
        ...connections.aedesOptions,
        persistence: sessions.persistence,
        authorizeForward: (client, packet) => {
          const forwarded = sessions.authorizeForward(client, packet);
          if (forwarded === null) return null;
          if (!connections.outgoing.admit(client, packet)) {
            tracker.backlogged(packet);
            metrics.limitReached('MAX_UNSENT_BYTES_PER_CLIENT');
            log.debug(
              { clientId: client.id, bytes: connections.outgoing.bytes(client) },
              'connection backlogged: command not sent',
            );
            return null;
          }
          tracker.forwarded(packet);
          return forwarded;
        },
      },
    });
    const devices = broker;
    takeover = startTakeover({
      nc,
      gatewayId: id,
      closeConnection: (clientId, by) => devices.takeOver(clientId, by),
      dropSession: (clientId) => sessions.movedAway(clientId),
      takenOver: (what) => metrics.takenOver(what),
      log,
    });
    limitControlPackets(broker.aedes, {
      perSec: config.MAX_CONTROL_PACKETS_PER_SEC,
      burst: config.CONTROL_PACKETS_BURST,
      exceeded: (client) => {
        metrics.limitReached('MAX_CONTROL_PACKETS_PER_SEC');
        log.warn(
          { clientId: client.id, perSec: config.MAX_CONTROL_PACKETS_PER_SEC },
          'PINGREQ/SUBSCRIBE/UNSUBSCRIBE far above the limit: disconnecting',
        );
        return new ControlRateError(config.MAX_CONTROL_PACKETS_PER_SEC, client.id);
      },
    });
    startDownlink({
      nc,
      broker,
      registry: cache,
      directory: new GatewayDirectory(id),
      tracker,
      ...(edgeNodes && children
        ? {
            sparkplug: (tenant: string, deviceId: string, body: Uint8Array) =>
              sparkplugCommandFor(
                edgeNodes,
                (edge, device) => children.speaksFor(edge, device),
                tenant,
                deviceId,
                body,
                Date.now(),
              ),
          }
        : {}),
      metrics,
      log,
    });
    listeners = await startListeners(config, broker, {
      deadlines: connections.deadlines,
      dropped: () => metrics.limitReached('MAX_CONNECTIONS'),
      log,
    });
    if (config.HTTP_INGEST_PORT !== undefined) {
      const store = publisher;
      ingest = createHttpIngestServer({
        config,
        auth: broker.auth,
        budgets: broker.budgets,
        telemetry,
        presence,
        natsConnected: () => store.isConnected,
        metrics,
        log,
        ...(config.HTTP_INGEST_TLS && config.TLS_CERT_FILE && config.TLS_KEY_FILE
          ? { tls: { cert: readFileSync(config.TLS_CERT_FILE), key: readFileSync(config.TLS_KEY_FILE) } }
          : {}),
      });
      // Under GATEWAY_WORKERS, node:cluster shares the port between the workers as it does MQTT's.
      ingestPort = await listen(ingest, config.HTTP_INGEST_PORT, config.BIND_HOST, 'HTTP_INGEST_PORT');
    }
    registry = cache;
    heartbeat = startHeartbeat({
      nc,
      gatewayId: id,
      intervalMs: config.HEARTBEAT_INTERVAL,
      connections: () => devices.connectedClients,
      log,
    });
  } catch (err) {
    takeover?.close();
    discards?.close();
    summaries?.close();
    listeners && (await listeners.close());
    if (ingest) await stopAccepting(ingest);
    broker && (await broker.close());
    telemetry?.close();
    publisher?.close();
    await live?.close();
    await nc?.close();
    if (http) await closeServer(http);
    throw err;
  }

  const ports = {
    mqtt: listeners.mqtt,
    ws: listeners.ws,
    mqtts: listeners.mqtts,
    http: httpPort,
    httpIngest: ingestPort,
  };
  log.info({ gateway: id, ports, authMode: config.AUTH_MODE }, 'gateway ready');

  let closed: Promise<void> | undefined;
  return {
    id,
    ports,
    metrics,
    notReady,
    close() {
      closed ??= (async () => {
        closing = true;
        await listeners?.close();
        // Idle keep-alive connections are closed; requests being stored are answered below.
        if (ingest) await stopAccepting(ingest);
        ingest?.closeIdleConnections();
        const left = (await publisher?.settle(config.SHUTDOWN_GRACE_MS)) ?? 0;
        if (left > 0)
          log.warn(
            { inFlight: left },
            'shutdown grace over: unacknowledged publishes stay with their devices',
          );
        await broker?.close();
        telemetry?.close();
        discards?.close();
        // Beats until the clients are closed: during the shutdown grace they are still connected.
        heartbeat?.close();
        summaries?.close();
        takeover?.close();
        // Whatever is still held is answered 503 by now (publisher.close fails it).
        publisher?.close();
        ingest?.closeAllConnections();
        registry?.stop();
        await live?.close();
        await nc?.drain().catch(() => nc?.close());
        if (http) await closeServer(http);
        log.info('gateway stopped');
      })();
      return closed;
    },
  };
}
