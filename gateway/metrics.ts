import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { RejectionReason } from '../contract/rejections.js';
import { DEADLETTER_STREAM, PRESENCE_STREAM, TELEMETRY_STREAM } from '../contract/subjects.js';

/**
 * Every bound a device (or an HTTP client) can run into, named by the setting that configures it.
 * Each is counted in `gateway_limit_reached_total{limit}` when it is hit and has a row in the README's
 * Limits table (a test keeps the three in step).
 */
export const GATEWAY_LIMITS = [
  'MAX_PACKET_BYTES',
  'MAX_CONNECT_BYTES',
  'MAX_PAYLOAD_BYTES',
  'MAX_READINGS_PER_PUBLISH',
  'MAX_CLIENT_ID_BYTES',
  'MAX_CONNECTIONS_PER_DEVICE',
  'DEVICE_MAX_CONNECTS_PER_MIN',
  'AUTH_FAILURES_PER_MINUTE',
  'AUTH_VERIFY_QUEUE',
  'AUTH_VERIFIED_MAX_DEVICES',
  'DEVICE_MAX_MSGS_PER_SEC',
  'DEVICE_MAX_BYTES_PER_SEC',
  'DEVICE_MAX_METRICS',
  'TENANT_MAX_METRICS',
  'DEDUP_MAX_PUBLISHES',
  'MAX_IN_FLIGHT_PER_CLIENT',
  'MAX_SUBSCRIPTIONS_PER_CLIENT',
  'QOS0_MAX_IN_FLIGHT',
  'CONNECT_TIMEOUT_MS',
  'MAX_CONNECTIONS',
  'HTTP_MAX_CONNECTIONS',
  'HTTP_REQUEST_TIMEOUT_MS',
  'HTTP_INGEST_READ_TIMEOUT_MS',
  'HTTP_INGEST_STORE_TIMEOUT_MS',
  'MAX_KEEPALIVE_SECONDS',
  'MIN_KEEPALIVE_SECONDS',
  'MAX_QUEUED_MESSAGES',
  'SESSION_EXPIRY_MS',
  'MAX_SESSIONS_PER_DEVICE',
  'GATEWAY_DEVICE_MAX_CHILDREN',
  'MAX_CONTROL_PACKETS_PER_SEC',
  'MAX_UNSENT_BYTES_PER_CLIENT',
  'DRAIN_TIMEOUT_MS',
  'DEADLETTER_MAX_PAYLOAD_BYTES',
  'STATUS_MAX_PAYLOAD_BYTES',
  'DEADLETTER_MAX_BYTES',
  'PRESENCE_MAX_BYTES',
  'SPARKPLUG_MAX_METRICS_PER_BIRTH',
  'SPARKPLUG_MAX_METRICS_PER_NODE',
  'SPARKPLUG_MAX_DEVICES_PER_NODE',
] as const;
export type GatewayLimit = (typeof GATEWAY_LIMITS)[number];

/**
 * The gateway's Prometheus metrics, on their own registry so several gateways can share a process.
 * With GATEWAY_WORKERS the primary serves them summed over the workers (AggregatorRegistry.aggregate);
 * a gauge whose sum means nothing says how it aggregates instead (`aggregator`).
 */
export function createGatewayMetrics(sources: {
  inFlight: () => number;
  natsConnected: () => boolean;
  connections: () => number;
  /** Streams JetStream refuses to store in for lack of room (JetStreamPublisher.refusals). */
  refusals?: () => readonly { stream: string }[];
  /** The device registry's revision this gateway has applied (RegistryCache.revision). */
  registryRevision?: () => number;
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'gateway_' });

  new Gauge({
    name: 'gateway_mqtt_connections',
    help: 'MQTT clients currently connected',
    registers: [registry],
    collect() {
      this.set(sources.connections());
    },
  });
  const connects = new Counter({
    name: 'gateway_mqtt_connects_total',
    help: 'CONNECT attempts by result',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const publishes = new Counter({
    name: 'gateway_mqtt_publishes_total',
    help: 'MQTT PUBLISH packets from devices by outcome: acked (stored or dead-lettered), not_stored, denied, throttled',
    labelNames: ['outcome', 'qos'] as const,
    registers: [registry],
  });
  const events = new Counter({
    name: 'gateway_events_total',
    help: 'Readings published to TELEMETRY by outcome: stored, duplicate (already stored), dropped (QoS 0 over budget)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const httpRequests = new Counter({
    name: 'gateway_http_ingest_requests_total',
    help: 'Requests on HTTP_INGEST_PORT by route (telemetry, status, other) and answer status',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });
  const httpReadings = new Counter({
    name: 'gateway_http_ingest_readings_total',
    help: 'Readings posted on HTTP_INGEST_PORT by outcome: stored, duplicate, rejected (answered with a code), unconfirmed (JetStream did not confirm them in time: answered 503)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const retransmissions = new Counter({
    name: 'gateway_mqtt_retransmissions_total',
    help:
      'QoS 1/2 publishes with the DUP flag, by what recognised them: publish (the one they repeat was remembered), ' +
      'content (their readings carry ts), none (stored as new: the original is unknown to this gateway)',
    labelNames: ['matched'] as const,
    registers: [registry],
  });
  const deadletters = new Counter({
    name: 'gateway_deadletters_total',
    help: 'Rejected messages, or rejected readings of a batch (one each; a message’s travel in one dead letter), by reason code',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const aclDenied = new Counter({
    name: 'gateway_acl_denied_total',
    help: 'Publishes or subscriptions refused because they leave the device’s own topics',
    labelNames: ['action'] as const,
    registers: [registry],
  });
  const ackLatency = new Histogram({
    name: 'gateway_jetstream_ack_seconds',
    help: 'Time from first JetStream publish to its PubAck, retries included',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const retries = new Counter({
    name: 'gateway_jetstream_retries_total',
    help: 'JetStream publishes sent again, by cause',
    labelNames: ['cause'] as const,
    registers: [registry],
  });
  const downlink = new Counter({
    name: 'gateway_downlink_total',
    help: 'Commands from NATS by result',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'gateway_jetstream_in_flight',
    help: 'JetStream publishes sent or held and not yet acknowledged',
    registers: [registry],
    collect() {
      this.set(sources.inFlight());
    },
  });
  new Gauge({
    name: 'gateway_jetstream_refusing',
    help: '1 while JetStream refuses to store in the stream for lack of room (store, stream or account full): nothing is acknowledged',
    labelNames: ['stream'] as const,
    registers: [registry],
    // Over workers: 1 while any of them is refused.
    aggregator: 'max',
    collect() {
      const refusing = new Set((sources.refusals?.() ?? []).map((r) => r.stream));
      this.reset();
      for (const stream of new Set([TELEMETRY_STREAM, DEADLETTER_STREAM, PRESENCE_STREAM, ...refusing]))
        this.labels(stream).set(refusing.has(stream) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'gateway_registry_revision',
    help: 'Revision of the device registry this gateway has applied; one gateway behind the others has missed registry changes',
    registers: [registry],
    // Over workers: the one furthest behind.
    aggregator: 'min',
    collect() {
      this.set(sources.registryRevision?.() ?? 0);
    },
  });
  new Gauge({
    name: 'gateway_nats_connected',
    help: '1 while the NATS connection is up',
    registers: [registry],
    // Over workers: 1 only while every one is connected.
    aggregator: 'min',
    collect() {
      this.set(sources.natsConnected() ? 1 : 0);
    },
  });

  // The broker owns the limiters; it points these at them once it has made them.
  const limitSources = { blockedSources: () => 0, verifyQueued: () => 0, sessionsAway: () => 0 };
  new Gauge({
    name: 'gateway_auth_blocked_sources',
    help: 'Source addresses whose CONNECTs are refused for too many failed authentications',
    registers: [registry],
    collect() {
      this.set(limitSources.blockedSources());
    },
  });
  new Gauge({
    name: 'gateway_auth_verify_queued',
    help: 'CONNECTs waiting for a secret verification (scrypt)',
    registers: [registry],
    collect() {
      this.set(limitSources.verifyQueued());
    },
  });
  new Gauge({
    name: 'gateway_sessions_away',
    help: 'Persistent sessions (clean: false) whose device is not connected, kept up to SESSION_EXPIRY_MS',
    registers: [registry],
    collect() {
      this.set(limitSources.sessionsAway());
    },
  });
  const throttled = new Counter({
    name: 'gateway_publish_throttled_total',
    help: 'Publishes over DEVICE_MAX_MSGS_PER_SEC by action: delayed, or disconnected (debt past the burst)',
    labelNames: ['action'] as const,
    registers: [registry],
  });
  const takeovers = new Counter({
    name: 'gateway_takeovers_total',
    help: 'Connections closed and persistent sessions dropped here because their client id connected at another gateway',
    labelNames: ['what'] as const,
    registers: [registry],
  });
  const subscriptionLimit = new Counter({
    name: 'gateway_subscription_limit_total',
    help: 'Connections closed for going past MAX_SUBSCRIPTIONS_PER_CLIENT',
    registers: [registry],
  });

  const sparkplugSkipped = new Counter({
    name: 'gateway_sparkplug_metrics_skipped_total',
    help: 'Sparkplug B metric values that are not readings, by reason: datatype, control, transient, null, name (README, Sparkplug B)',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const sparkplugRebirths = new Counter({
    name: 'gateway_sparkplug_rebirths_total',
    help: 'NCMD Node Control/Rebirth requests sent to Sparkplug B edge nodes',
    registers: [registry],
  });

  const limitReached = new Counter({
    name: 'gateway_limit_reached_total',
    help: 'Times a bound was hit, by the setting that configures it (see the README, Limits)',
    labelNames: ['limit'] as const,
    registers: [registry],
  });
  // Every limit shows from the start, at 0, so that an alert on it needs no special case.
  const limitChildren = new Map(GATEWAY_LIMITS.map((l) => [l, limitReached.labels(l)] as const));
  // labels() alone creates no series in prom-client; an increment by 0 does.
  for (const child of limitChildren.values()) child.inc(0);

  // Children bound once: label lookup is not free on the per-message path.
  const stored = events.labels('stored');
  const duplicate = events.labels('duplicate');
  const droppedQos0 = events.labels('dropped');
  const publishOutcomes = ['acked', 'not_stored', 'denied', 'throttled'] as const;
  const delayed = throttled.labels('delayed');
  const throttleDisconnected = throttled.labels('disconnected');
  const publishChildren = new Map(
    publishOutcomes.flatMap((o) =>
      [0, 1, 2].map((q) => [`${o}${q}`, publishes.labels(o, String(q))] as const),
    ),
  );
  return {
    registry,
    connects,
    publish: (outcome: (typeof publishOutcomes)[number], qos: number) =>
      publishChildren.get(`${outcome}${qos}`)?.inc(),
    events,
    aclDenied,
    limitSources,
    throttled: (action: 'delayed' | 'disconnected') =>
      (action === 'delayed' ? delayed : throttleDisconnected).inc(),
    subscriptionLimit,
    takenOver: (what: 'connection' | 'session') => takeovers.labels(what).inc(),
    downlink,
    retries,
    deadletter: (reason: RejectionReason) => deadletters.labels(reason).inc(),
    sparkplugSkipped: (reason: string, n: number) => sparkplugSkipped.labels(reason).inc(n),
    sparkplugRebirth: () => sparkplugRebirths.inc(),
    limitReached: (limit: GatewayLimit, n = 1) => limitChildren.get(limit)?.inc(n),
    retransmission: (matched: 'publish' | 'content' | 'none') => retransmissions.labels(matched).inc(),
    ackLatency: (seconds: number) => ackLatency.observe(seconds),
    httpRequest: (route: 'telemetry' | 'status' | 'other', status: number) =>
      httpRequests.labels(route, String(status)).inc(),
    httpReadings: (outcome: 'stored' | 'duplicate' | 'rejected' | 'unconfirmed', n: number) => {
      if (n > 0) httpReadings.labels(outcome).inc(n);
    },
    event: (outcome: 'stored' | 'duplicate' | 'dropped') =>
      (outcome === 'stored' ? stored : outcome === 'duplicate' ? duplicate : droppedQos0).inc(),
  };
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;
