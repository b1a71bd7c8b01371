import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { env } from '../common/config.js';
import { GATEWAY_ID_PATTERN } from '../contract/ids.js';
import { LIVE_MAX_CLIENTS } from './live/live-view.js';

export const DEFAULT_MQTT_PORT = 1883;
export const DEFAULT_MQTT_WS_PORT = 8083;
export const DEFAULT_GATEWAY_HTTP_PORT = 8080;
export const DEFAULT_MAX_PAYLOAD_BYTES = 65_536;
/** Frames above this are refused before they are buffered (aedes itself has no limit). */
export const DEFAULT_MAX_PACKET_BYTES = 1_048_576;
export const DEFAULT_TS_MAX_FUTURE_MS = 5 * 60_000;
export const DEFAULT_TS_MAX_AGE_MS = 7 * 24 * 3_600_000;
/** JetStream dedup window: covers a device reconnecting and retransmitting its unacked messages. */
export const DEFAULT_DEDUP_WINDOW_MS = 2 * 60_000;
export const DEFAULT_ACK_TIMEOUT_MS = 5_000;
export const DEFAULT_TELEMETRY_MAX_AGE_MS = 7 * 24 * 3_600_000;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** QoS 0 is best effort: past this many unacknowledged QoS 0 events, new ones are dropped and counted. */
export const DEFAULT_QOS0_MAX_IN_FLIGHT = 10_000;
/** The presence owner takes a gateway's connections as lost after HEARTBEAT_MISSES silent intervals. */
export const DEFAULT_HEARTBEAT_INTERVAL = '5s';
/** Failed CONNECTs a source address may make per minute (a leaky bucket of that size); 0 turns it off. */
export const DEFAULT_AUTH_FAILURES_PER_MINUTE = 30;
/** scrypt checks at once: half of libuv's 4 threads, so file and DNS work is never starved by a storm. */
export const DEFAULT_AUTH_VERIFY_CONCURRENCY = 2;
/** CONNECTs waiting for a check; at ~65 ms a check, 2 at a time, the last waits about 8 s. */
export const DEFAULT_AUTH_VERIFY_QUEUE = 256;
/**
 * Devices whose last good secret the gateway remembers (a keyed SHA-256, ~150 bytes each), so that a
 * reconnect or an HTTP request costs a hash, not an scrypt. Past it the oldest is forgotten.
 */
export const DEFAULT_AUTH_VERIFIED_MAX_DEVICES = 100_000;
/** Publishes a second per device (all its connections); 0 turns the limit off. */
export const DEFAULT_DEVICE_MAX_MSGS_PER_SEC = 100;
export const DEFAULT_DEVICE_MSGS_BURST = 200;
/** Publishes of one connection being stored at once; past it the connection is not read (TCP backpressure). */
export const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT = 100;
/** A device needs one subscription (its commands); a hundred leaves room for anything sensible. */
export const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT = 100;
/**
 * Readings one publish may carry. Each costs ~30 µs to validate and store, so this bounds how long one
 * message holds the event loop (~30 ms) and how many events it becomes.
 */
export const DEFAULT_MAX_READINGS_PER_PUBLISH = 1_000;
/**
 * Payload bytes a second per device (all its connections). Parsing, validating and storing cost about
 * 1 µs a byte whatever the payload's shape, so this bounds what one device costs (~2 % of a core);
 * a device at its full publish rate sends ~4 KiB/s, a backfill of 40-byte readings 400 a second.
 */
export const DEFAULT_DEVICE_MAX_BYTES_PER_SEC = 16_384;
/** Bytes a device may save up; at least MAX_PAYLOAD_BYTES, so that one largest payload always passes. */
export const DEFAULT_DEVICE_BYTES_BURST = 131_072;
/**
 * Publishes remembered to tell a retransmission from a new publish (about 200 bytes each). Past it the
 * least recently active sessions are forgotten first; a retransmission of theirs is stored again.
 */
export const DEFAULT_DEDUP_MAX_PUBLISHES = 100_000;
/**
 * A CONNECT is read before its sender is authenticated. Client id (MAX_CLIENT_ID_BYTES), credentials
 * and a will (a status payload) fit in far less; a larger one is closed at its header.
 */
export const DEFAULT_MAX_CONNECT_BYTES = 8_192;
/** Client ids are kept in presence state and logs; real devices use a few dozen bytes. */
export const DEFAULT_MAX_CLIENT_ID_BYTES = 128;
/** Connections one device may hold on one gateway; a ninth closes the oldest. */
export const DEFAULT_MAX_CONNECTIONS_PER_DEVICE = 8;
/**
 * Accepted connections a minute per device (the same number may come at once). Each costs presence
 * events and a will; a device that wakes, publishes and sleeps needs one a minute.
 */
export const DEFAULT_DEVICE_MAX_CONNECTS_PER_MIN = 60;
/** Distinct metric names one device may use: each becomes series in the TSDB. */
export const DEFAULT_DEVICE_MAX_METRICS = 256;
/** Distinct metric names across a tenant's devices. */
export const DEFAULT_TENANT_MAX_METRICS = 10_000;
/** A device silent this long has its metric names forgotten (they count anew when it comes back). */
export const DEFAULT_METRIC_NAMES_TTL = '24h';
/**
 * From accept to MQTT CONNECT, TLS handshake and WebSocket upgrade included, on every listener. aedes'
 * own default; a device on a slow cellular link completes a TLS handshake in a few seconds.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/**
 * Sockets per MQTT listener. Node raises the fd limit to the hard limit (often 1M, 20k in small
 * containers); at 15–22 KB per idle connection this is ~200 MB per listener, and it leaves fds for
 * NATS, the HTTP server and files when a flood fills one listener.
 */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/**
 * Keepalive applied to a client asking for 0 (none) or more: a dead peer (a modem gone without a FIN)
 * is noticed after 1.5 × this and stops holding its socket, session and "online". AWS IoT Core caps
 * keepalive at the same 1,200 s.
 */
export const DEFAULT_MAX_KEEPALIVE_SECONDS = 1_200;
/** Below it a short stall costs a reconnect; client libraries (libmosquitto, rumqtt) refuse less too. */
export const DEFAULT_MIN_KEEPALIVE_SECONDS = 5;
/** The CONNECT keepalive field is 16 bits. */
const MQTT_MAX_KEEPALIVE_SECONDS = 65_535;
/**
 * Commands queued for a persistent session while its device is away; beyond, new ones are dropped
 * (and the request answered so). A device back after a day of hourly commands gets them all.
 */
export const DEFAULT_MAX_QUEUED_MESSAGES = 100;
/** Away persistent sessions of one device (its client ids `{deviceId}:…`); a modem and a fallback need 2. */
export const DEFAULT_MAX_SESSIONS_PER_DEVICE = 10;
/**
 * Children a gateway device with `--gateway` (any device of its tenant) may have registered through
 * it: each is a registry entry and state on every gateway, which a device must not make unbounded.
 */
export const DEFAULT_GATEWAY_DEVICE_MAX_CHILDREN = 1_000;
/** A persistent session away this long is forgotten: a device off for a weekend starts afresh. */
export const DEFAULT_SESSION_EXPIRY_MS = 24 * 3_600_000;
/** PINGREQ/SUBSCRIBE/UNSUBSCRIBE a second per connection; a device sends one PINGREQ a keepalive. */
export const DEFAULT_MAX_CONTROL_PACKETS_PER_SEC = 10;
/** Saved up for a connection's subscriptions: its MAX_SUBSCRIPTIONS_PER_CLIENT, one packet each, and as many UNSUBSCRIBEs. */
export const DEFAULT_CONTROL_PACKETS_BURST = 200;
/**
 * Bytes written to one connection that its socket has not sent yet (beyond what the kernel's socket
 * buffer took); past it, commands to it are refused (`backlogged`). A command is typically well under
 * 1 KiB, so this is hundreds of them, or one largest payload: 10,000 connections that all stopped
 * reading hold at most ~640 MiB (plus one command each).
 */
export const DEFAULT_MAX_UNSENT_BYTES_PER_CLIENT = 65_536;
/**
 * A connection whose socket, once backed up, has not sent all that was written to it within this is
 * closed (aedes' drainTimeout, there 60 s): a device that reads nothing holds its bytes this long at
 * most. One that reads, only more slowly than commands come for it, is closed too if its backlog never
 * empties (aedes waits for the socket's `drain`, which needs an empty buffer).
 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
/** Sockets on the HTTP port: a few scrapers and probes, LIVE_MAX_CLIENTS viewers and their page loads. */
export const DEFAULT_HTTP_MAX_CONNECTIONS = 256;
/** To send a whole request on the HTTP port (Node's default is 300 s, and it checks only every 30 s). */
export const DEFAULT_HTTP_REQUEST_TIMEOUT_MS = 10_000;
/**
 * To send a whole request on HTTP_INGEST_PORT, headers and body: a cellular module sends 64 KiB in
 * well under this on 2G's ~40 kbit/s; a client that sends nothing holds its socket no longer.
 */
export const DEFAULT_HTTP_INGEST_READ_TIMEOUT_MS = 30_000;
/**
 * From a complete request to its answer: how long the gateway tries to store it before it answers 503
 * (nothing it could not store is kept). Two ack timeouts: one lost PubAck is retried within it.
 */
export const DEFAULT_HTTP_INGEST_STORE_TIMEOUT_MS = 10_000;
/**
 * An idle keep-alive connection on HTTP_INGEST_PORT is closed after this: longer than the 5 s of
 * Node, so that a device posting every 30 s or so keeps its connection (and skips TCP and TLS setup).
 */
export const DEFAULT_HTTP_INGEST_KEEPALIVE_MS = 65_000;
/**
 * Payload bytes a dead letter keeps: enough to see a bad payload's shape, its first readings and where
 * it goes wrong (the letter also says which readings were rejected and why); the size says the rest.
 * Kept as text or base64, whichever is shorter, so a letter stays under ~2.4 × this plus ~1.5 KB.
 */
export const DEFAULT_DEADLETTER_MAX_PAYLOAD_BYTES = 4_096;
/** Status payload bytes a presence event keeps: a birth message or will is a few dozen bytes. */
export const DEFAULT_STATUS_MAX_PAYLOAD_BYTES = 4_096;
/**
 * DEADLETTER's size: at its limit it discards its oldest letters (it keeps 30 days otherwise), so that
 * a device sending garbage can never fill the store TELEMETRY needs. ~1M letters of ~1 KB. JetStream
 * reserves it in its store when the stream is created.
 */
export const DEFAULT_DEADLETTER_MAX_BYTES = 1_073_741_824;
/**
 * PRESENCE's size, likewise (it keeps 7 days otherwise): ~4M events of ~250 bytes. The presence owner
 * reads them within seconds; only one stopped for longer than that many events would miss some.
 */
export const DEFAULT_PRESENCE_MAX_BYTES = 1_073_741_824;
/**
 * Metrics one Sparkplug NBIRTH or DBIRTH may define (names, aliases, datatypes and units held while it
 * is in force, ~250 bytes each): a PLC's worth of tags. Past it the birth is refused.
 */
export const DEFAULT_SPARKPLUG_MAX_METRICS_PER_BIRTH = 512;
/**
 * Metric definitions held for one edge node and all its devices together: measured 1.0 MB full with
 * 30-character names, 1.75 MB with names at their 256-character maximum.
 */
export const DEFAULT_SPARKPLUG_MAX_METRICS_PER_NODE = 4_096;
/** Devices one Sparkplug edge node may have born at once. */
export const DEFAULT_SPARKPLUG_MAX_DEVICES_PER_NODE = 256;
/**
 * Rebirth requests to one edge node at most this often: a rebirth costs it every birth again, and the
 * messages that follow a gap would otherwise each ask for one.
 */
export const DEFAULT_SPARKPLUG_REBIRTH_INTERVAL_MS = 5_000;
/**
 * The Sparkplug host application id the gateway announces as online (retained
 * `spBv1.0/STATE/{id}`): an edge node configured with it as its primary host publishes only while
 * it sees that host online. `none`: none announced (an empty variable counts as unset).
 */
export const DEFAULT_SPARKPLUG_HOST_ID = 'iot-gateway';
export const SPARKPLUG_NO_HOST = 'none';
/** A stream's byte limit below this could not hold a handful of the largest letters. */
const MIN_STREAM_MAX_BYTES = 1_048_576;
/** What one letter or event may keep: with its other fields, well under NATS' 1 MB max_payload. */
const MAX_KEPT_PAYLOAD_BYTES = 262_144;
/** Sockets on the HTTP port kept for /readyz, /metrics and the like when the live view is full. */
const HTTP_PROBE_RESERVE = 8;
/** A shorter operator token is too easy to guess for a page that shows the whole fleet. */
export const MIN_OPERATOR_TOKEN_CHARS = 16;
/**
 * With workers, what the primary gives them beyond SHUTDOWN_GRACE_MS (disconnecting devices, draining
 * NATS) before it kills them; a supervisor of the gateway waits longer still.
 */
export const WORKERS_STOP_MARGIN_MS = 5_000;
/** Workers at most: past the cores they only add NATS connections, heartbeats and memory. */
const MAX_GATEWAY_WORKERS = 64;
/**
 * With workers, each gets `{GATEWAY_ID}-w{n}` (n counts every worker started, restarts included, so a
 * restarted worker never takes the id whose connections the presence owner still counts): the base
 * leaves room for `-w` and 6 digits within GATEWAY_ID_PATTERN's 32.
 */
export const MAX_GATEWAY_ID_CHARS_WITH_WORKERS = 24;
/** Below this, heartbeats cost the NATS cluster more than they tell. */
const MIN_HEARTBEAT_INTERVAL_MS = 100;

/** In a cross-field rule: the fields it compares parsed (a field that failed is reported on its own). */
const known = (...values: unknown[]) => values.every((v) => typeof v === 'number' && Number.isFinite(v));

export const GatewayConfigSchema = z
  .object({
    MQTT_PORT: env.port(DEFAULT_MQTT_PORT),
    MQTT_WS_PORT: env.port(DEFAULT_MQTT_WS_PORT),
    MQTTS_PORT: env.optionalPort(),
    TLS_CERT_FILE: z.string().optional(),
    TLS_KEY_FILE: z.string().optional(),
    BIND_HOST: z.string().default('0.0.0.0'),
    NATS_URL: env.natsUrl(),
    HTTP_PORT: env.port(DEFAULT_GATEWAY_HTTP_PORT),
    /** Telemetry and status over HTTP (gateway/http-ingest/); unset: not served. */
    HTTP_INGEST_PORT: env.optionalPort(),
    /** HTTPS on HTTP_INGEST_PORT with TLS_CERT_FILE and TLS_KEY_FILE (the MQTT TLS listener's). */
    HTTP_INGEST_TLS: env.bool(false),
    AUTH_MODE: z.enum(['registry', 'open']).default('registry'),
    MAX_PAYLOAD_BYTES: z.coerce.number().int().min(64).max(16_777_216).default(DEFAULT_MAX_PAYLOAD_BYTES),
    MAX_PACKET_BYTES: z.coerce.number().int().min(1024).max(268_435_455).default(DEFAULT_MAX_PACKET_BYTES),
    TS_MAX_FUTURE_MS: env.nonNegativeInt(DEFAULT_TS_MAX_FUTURE_MS),
    TS_MAX_AGE_MS: env.positiveInt(DEFAULT_TS_MAX_AGE_MS),
    DEDUP_WINDOW_MS: env.positiveInt(DEFAULT_DEDUP_WINDOW_MS),
    ACK_TIMEOUT_MS: env.positiveInt(DEFAULT_ACK_TIMEOUT_MS),
    QOS0_MAX_IN_FLIGHT: env.positiveInt(DEFAULT_QOS0_MAX_IN_FLIGHT),
    TELEMETRY_MAX_AGE_MS: env.positiveInt(DEFAULT_TELEMETRY_MAX_AGE_MS),
    /** Stream replicas; 3 on a three-node cluster. Applied when the gateway creates the streams. */
    STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
    SHUTDOWN_GRACE_MS: env.positiveInt(DEFAULT_SHUTDOWN_GRACE_MS),
    HEARTBEAT_INTERVAL: env.duration(DEFAULT_HEARTBEAT_INTERVAL, MIN_HEARTBEAT_INTERVAL_MS),
    GATEWAY_ID: z.string().regex(GATEWAY_ID_PATTERN, 'letters, digits, _ and - only, at most 32').optional(),
    /**
     * Processes sharing the MQTT ports (node:cluster), each one gateway with its own NATS connection;
     * 1 is a single process with no cluster primary. Default: the cores Node may use.
     */
    GATEWAY_WORKERS: z.coerce
      .number()
      .int()
      .min(1)
      .max(MAX_GATEWAY_WORKERS)
      .default(() => availableParallelism()),
    LOG_LEVEL: env.logLevel(),
    LOG_FORMAT: env.logFormat(),
    AUTH_FAILURES_PER_MINUTE: env.nonNegativeInt(DEFAULT_AUTH_FAILURES_PER_MINUTE),
    AUTH_VERIFY_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(DEFAULT_AUTH_VERIFY_CONCURRENCY),
    AUTH_VERIFY_QUEUE: env.nonNegativeInt(DEFAULT_AUTH_VERIFY_QUEUE),
    AUTH_VERIFIED_MAX_DEVICES: env.positiveInt(DEFAULT_AUTH_VERIFIED_MAX_DEVICES),
    DEVICE_MAX_MSGS_PER_SEC: env.nonNegativeInt(DEFAULT_DEVICE_MAX_MSGS_PER_SEC),
    DEVICE_MSGS_BURST: env.positiveInt(DEFAULT_DEVICE_MSGS_BURST),
    MAX_SUBSCRIPTIONS_PER_CLIENT: env.positiveInt(DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT),
    MAX_IN_FLIGHT_PER_CLIENT: env.positiveInt(DEFAULT_MAX_IN_FLIGHT_PER_CLIENT),
    MAX_READINGS_PER_PUBLISH: env.positiveInt(DEFAULT_MAX_READINGS_PER_PUBLISH),
    DEVICE_MAX_BYTES_PER_SEC: env.nonNegativeInt(DEFAULT_DEVICE_MAX_BYTES_PER_SEC),
    DEVICE_BYTES_BURST: env.positiveInt(DEFAULT_DEVICE_BYTES_BURST),
    DEDUP_MAX_PUBLISHES: env.positiveInt(DEFAULT_DEDUP_MAX_PUBLISHES),
    // MQTT allows 65,535 bytes; 23 is the minimum a server must accept [MQTT-3.1.3-5].
    MAX_CONNECT_BYTES: z.coerce.number().int().min(512).max(268_435_455).default(DEFAULT_MAX_CONNECT_BYTES),
    MAX_CLIENT_ID_BYTES: z.coerce.number().int().min(23).max(65_535).default(DEFAULT_MAX_CLIENT_ID_BYTES),
    MAX_CONNECTIONS_PER_DEVICE: env.positiveInt(DEFAULT_MAX_CONNECTIONS_PER_DEVICE),
    DEVICE_MAX_CONNECTS_PER_MIN: env.nonNegativeInt(DEFAULT_DEVICE_MAX_CONNECTS_PER_MIN),
    DEVICE_MAX_METRICS: env.positiveInt(DEFAULT_DEVICE_MAX_METRICS),
    TENANT_MAX_METRICS: env.positiveInt(DEFAULT_TENANT_MAX_METRICS),
    METRIC_NAMES_TTL: env.duration(DEFAULT_METRIC_NAMES_TTL, 60_000),
    /** The live view at `/` of HTTP_PORT (gateway/live/); off, the gateway subscribes to nothing for it. */
    LIVE_VIEW: env.bool(true),
    /** Bearer token for the live view; in AUTH_MODE=registry the view answers 403 without one. */
    OPERATOR_TOKEN: z.string().optional(),
    // Connection-level bounds (gateway/limits/, gateway/listeners.ts).
    CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(DEFAULT_CONNECT_TIMEOUT_MS),
    MAX_CONNECTIONS: env.positiveInt(DEFAULT_MAX_CONNECTIONS),
    /** 0: no maximum, and keepalive 0 (no dead-peer detection) is allowed. */
    MAX_KEEPALIVE_SECONDS: z.coerce
      .number()
      .int()
      .min(0)
      .max(MQTT_MAX_KEEPALIVE_SECONDS)
      .default(DEFAULT_MAX_KEEPALIVE_SECONDS),
    MIN_KEEPALIVE_SECONDS: z.coerce
      .number()
      .int()
      .min(1)
      .max(MQTT_MAX_KEEPALIVE_SECONDS)
      .default(DEFAULT_MIN_KEEPALIVE_SECONDS),
    MAX_QUEUED_MESSAGES: env.positiveInt(DEFAULT_MAX_QUEUED_MESSAGES),
    SESSION_EXPIRY_MS: z.coerce.number().int().min(1_000).default(DEFAULT_SESSION_EXPIRY_MS),
    MAX_SESSIONS_PER_DEVICE: env.positiveInt(DEFAULT_MAX_SESSIONS_PER_DEVICE),
    GATEWAY_DEVICE_MAX_CHILDREN: env.positiveInt(DEFAULT_GATEWAY_DEVICE_MAX_CHILDREN),
    /** 0 turns the limit off. */
    MAX_CONTROL_PACKETS_PER_SEC: env.nonNegativeInt(DEFAULT_MAX_CONTROL_PACKETS_PER_SEC),
    CONTROL_PACKETS_BURST: env.positiveInt(DEFAULT_CONTROL_PACKETS_BURST),
    MAX_UNSENT_BYTES_PER_CLIENT: z.coerce
      .number()
      .int()
      .min(1024)
      .default(DEFAULT_MAX_UNSENT_BYTES_PER_CLIENT),
    // aedes' 0 (wait for ever) is not offered: a device that stopped reading would hold its bytes for ever.
    DRAIN_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(DEFAULT_DRAIN_TIMEOUT_MS),
    HTTP_MAX_CONNECTIONS: env.positiveInt(DEFAULT_HTTP_MAX_CONNECTIONS),
    HTTP_REQUEST_TIMEOUT_MS: z.coerce
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(DEFAULT_HTTP_REQUEST_TIMEOUT_MS),
    HTTP_INGEST_READ_TIMEOUT_MS: z.coerce
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(DEFAULT_HTTP_INGEST_READ_TIMEOUT_MS),
    HTTP_INGEST_STORE_TIMEOUT_MS: z.coerce
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(DEFAULT_HTTP_INGEST_STORE_TIMEOUT_MS),
    HTTP_INGEST_KEEPALIVE_MS: z.coerce
      .number()
      .int()
      .min(1_000)
      .max(600_000)
      .default(DEFAULT_HTTP_INGEST_KEEPALIVE_MS),
    /** 0 keeps no payload bytes in dead letters, only their size. */
    DEADLETTER_MAX_PAYLOAD_BYTES: z.coerce
      .number()
      .int()
      .min(0)
      .max(MAX_KEPT_PAYLOAD_BYTES)
      .default(DEFAULT_DEADLETTER_MAX_PAYLOAD_BYTES),
    STATUS_MAX_PAYLOAD_BYTES: z.coerce
      .number()
      .int()
      .min(0)
      .max(MAX_KEPT_PAYLOAD_BYTES)
      .default(DEFAULT_STATUS_MAX_PAYLOAD_BYTES),
    /** Applied when the gateway creates or updates the streams. */
    DEADLETTER_MAX_BYTES: z.coerce
      .number()
      .int()
      .min(MIN_STREAM_MAX_BYTES)
      .default(DEFAULT_DEADLETTER_MAX_BYTES),
    PRESENCE_MAX_BYTES: z.coerce.number().int().min(MIN_STREAM_MAX_BYTES).default(DEFAULT_PRESENCE_MAX_BYTES),
    // Sparkplug B edge nodes (gateway/sparkplug/).
    SPARKPLUG_MAX_METRICS_PER_BIRTH: env.positiveInt(DEFAULT_SPARKPLUG_MAX_METRICS_PER_BIRTH),
    SPARKPLUG_MAX_METRICS_PER_NODE: env.positiveInt(DEFAULT_SPARKPLUG_MAX_METRICS_PER_NODE),
    SPARKPLUG_MAX_DEVICES_PER_NODE: env.positiveInt(DEFAULT_SPARKPLUG_MAX_DEVICES_PER_NODE),
    SPARKPLUG_REBIRTH_INTERVAL_MS: z.coerce
      .number()
      .int()
      .min(100)
      .max(3_600_000)
      .default(DEFAULT_SPARKPLUG_REBIRTH_INTERVAL_MS),
    SPARKPLUG_HOST_ID: z
      .string()
      .regex(/^[^/+#\s]{1,64}$/, 'a host id of 1-64 characters without / + # or spaces, or `none`')
      .default(DEFAULT_SPARKPLUG_HOST_ID),
  })
  // Cross-field rules run even when a field failed (`when`), so one start lists every problem.
  .refine(
    (c) => {
      const tls = [c.MQTTS_PORT, c.TLS_CERT_FILE, c.TLS_KEY_FILE];
      return tls.every((v) => v === undefined) || tls.every((v) => v !== undefined);
    },
    {
      path: ['MQTTS_PORT'],
      message: 'the TLS listener needs MQTTS_PORT, TLS_CERT_FILE and TLS_KEY_FILE together',
      when: () => true,
    },
  )
  .refine((c) => !c.HTTP_INGEST_TLS || (c.TLS_CERT_FILE !== undefined && c.TLS_KEY_FILE !== undefined), {
    path: ['HTTP_INGEST_TLS'],
    message: 'HTTPS needs TLS_CERT_FILE and TLS_KEY_FILE (with MQTTS_PORT)',
    when: () => true,
  })
  .refine(
    (c) =>
      c.GATEWAY_ID === undefined ||
      typeof c.GATEWAY_WORKERS !== 'number' ||
      c.GATEWAY_WORKERS === 1 ||
      c.GATEWAY_ID.length <= MAX_GATEWAY_ID_CHARS_WITH_WORKERS,
    {
      path: ['GATEWAY_ID'],
      message: `at most ${MAX_GATEWAY_ID_CHARS_WITH_WORKERS} characters with GATEWAY_WORKERS above 1 (each worker adds -w and its number)`,
      when: () => true,
    },
  )
  // Checked on the whole config, with no path, so that the error message never echoes the token.
  .refine((c) => c.OPERATOR_TOKEN === undefined || c.OPERATOR_TOKEN.length >= MIN_OPERATOR_TOKEN_CHARS, {
    message: `OPERATOR_TOKEN: at least ${MIN_OPERATOR_TOKEN_CHARS} characters (e.g. \`openssl rand -hex 32\`)`,
    when: () => true,
  })
  .refine(
    (c) =>
      !known(c.DEVICE_BYTES_BURST, c.MAX_PAYLOAD_BYTES) ||
      c.DEVICE_MAX_BYTES_PER_SEC === 0 ||
      c.DEVICE_BYTES_BURST >= c.MAX_PAYLOAD_BYTES,
    {
      path: ['DEVICE_BYTES_BURST'],
      message: 'must be at least MAX_PAYLOAD_BYTES, or a largest payload could never pass',
      when: () => true,
    },
  )
  .refine(
    (c) => !known(c.DEVICE_MAX_METRICS, c.TENANT_MAX_METRICS) || c.DEVICE_MAX_METRICS <= c.TENANT_MAX_METRICS,
    { path: ['DEVICE_MAX_METRICS'], message: 'must not exceed TENANT_MAX_METRICS', when: () => true },
  )
  .refine(
    (c) =>
      !known(c.SPARKPLUG_MAX_METRICS_PER_BIRTH, c.SPARKPLUG_MAX_METRICS_PER_NODE) ||
      c.SPARKPLUG_MAX_METRICS_PER_BIRTH <= c.SPARKPLUG_MAX_METRICS_PER_NODE,
    {
      path: ['SPARKPLUG_MAX_METRICS_PER_BIRTH'],
      message: 'must not exceed SPARKPLUG_MAX_METRICS_PER_NODE, or a largest birth could never be held',
      when: () => true,
    },
  )
  .refine(
    (c) =>
      !known(c.DEDUP_MAX_PUBLISHES, c.MAX_IN_FLIGHT_PER_CLIENT) ||
      c.DEDUP_MAX_PUBLISHES >= dedupPublishesPerSession(c.MAX_IN_FLIGHT_PER_CLIENT),
    {
      path: ['DEDUP_MAX_PUBLISHES'],
      message: 'must hold at least one connection’s recent publishes (2 × MAX_IN_FLIGHT_PER_CLIENT)',
      when: () => true,
    },
  )
  .refine(
    (c) =>
      typeof c.MAX_PAYLOAD_BYTES !== 'number' ||
      typeof c.MAX_PACKET_BYTES !== 'number' ||
      c.MAX_PAYLOAD_BYTES < c.MAX_PACKET_BYTES,
    {
      path: ['MAX_PAYLOAD_BYTES'],
      message: 'must be below MAX_PACKET_BYTES so that oversize payloads can still be dead-lettered',
      when: () => true,
    },
  )
  .refine(
    (c) =>
      typeof c.MIN_KEEPALIVE_SECONDS !== 'number' ||
      typeof c.MAX_KEEPALIVE_SECONDS !== 'number' ||
      c.MAX_KEEPALIVE_SECONDS === 0 ||
      c.MIN_KEEPALIVE_SECONDS <= c.MAX_KEEPALIVE_SECONDS,
    {
      path: ['MIN_KEEPALIVE_SECONDS'],
      message: 'must not exceed MAX_KEEPALIVE_SECONDS',
      when: () => true,
    },
  )
  // A device subscribing its allowed maximum one filter a packet at connect must not be cut off.
  .refine(
    (c) =>
      typeof c.CONTROL_PACKETS_BURST !== 'number' ||
      typeof c.MAX_SUBSCRIPTIONS_PER_CLIENT !== 'number' ||
      !Number.isFinite(c.MAX_SUBSCRIPTIONS_PER_CLIENT) ||
      c.MAX_CONTROL_PACKETS_PER_SEC === 0 ||
      c.CONTROL_PACKETS_BURST >= c.MAX_SUBSCRIPTIONS_PER_CLIENT,
    {
      path: ['CONTROL_PACKETS_BURST'],
      message:
        'must be at least MAX_SUBSCRIPTIONS_PER_CLIENT, so that a device can subscribe them all at connect',
      when: () => true,
    },
  )
  // The live view's streams are long-lived: with the HTTP port full of them, /readyz would not
  // answer and a load balancer would take the gateway out.
  .refine(
    (c) =>
      !c.LIVE_VIEW ||
      typeof c.HTTP_MAX_CONNECTIONS !== 'number' ||
      c.HTTP_MAX_CONNECTIONS >= LIVE_MAX_CLIENTS + HTTP_PROBE_RESERVE,
    {
      path: ['HTTP_MAX_CONNECTIONS'],
      message: `must leave ${HTTP_PROBE_RESERVE} sockets beyond the live view's ${LIVE_MAX_CLIENTS} streams for probes and scrapes (or LIVE_VIEW=false)`,
      when: () => true,
    },
  );

export type GatewayConfig = z.output<typeof GatewayConfigSchema>;

/**
 * Publishes remembered per MQTT session to recognise retransmissions. A client retransmits only what
 * it has not seen acknowledged: at most what the gateway had in flight for it when the connection
 * broke, plus the acknowledgements lost on the way; twice the in-flight bound covers both.
 */
export function dedupPublishesPerSession(maxInFlightPerClient: number): number {
  return 2 * maxInFlightPerClient;
}
