import { z } from 'zod';

/**
 * The canonical event: one per reading, JSON, on `telemetry.{partition}.{tenant}.{deviceId}`.
 * Values are in canonical units (contract/units.ts); `originalUnit` is what the device said when it
 * differed. `id` is the JetStream message id the gateway deduplicated on, so consumers can use it as
 * an idempotency key too.
 */
export const CANONICAL_EVENT_VERSION = 1;

export const CanonicalMetric = z.object({
  value: z.number(),
  unit: z.string(),
  originalUnit: z.string().optional(),
});

export const CanonicalEvent = z.object({
  id: z.string(),
  tenant: z.string(),
  deviceId: z.string(),
  /** Event time, ISO-8601 UTC. The device's own `ts`, or receivedAt when it sent none. */
  ts: z.iso.datetime(),
  receivedAt: z.iso.datetime(),
  seq: z.int().nonnegative().optional(),
  /** Version of the device payload this reading arrived in. */
  schemaVersion: z.int().positive(),
  metrics: z.record(z.string(), CanonicalMetric),
  /** The device's registry labels (e.g. `type`, `site`), copied at ingest time. */
  labels: z.record(z.string(), z.string()),
});

export type CanonicalMetric = z.infer<typeof CanonicalMetric>;
export type CanonicalEvent = z.infer<typeof CanonicalEvent>;

/** One rejected reading of a batch, as its dead letter lists it. */
export const DeadLetterRejection = z.object({
  index: z.int().nonnegative(),
  reason: z.string(),
  detail: z.string(),
});
export type DeadLetterRejection = z.infer<typeof DeadLetterRejection>;

/**
 * A rejected message, or the rejected readings of one, on `deadletter.{tenant}.{reason}`: at most one
 * letter per MQTT publish, however many of its readings were rejected. Nothing is dropped silently.
 * Its size is bounded whatever the device sent: the payload by the gateway's
 * DEADLETTER_MAX_PAYLOAD_BYTES (4/3 of it at most as JSON), device input quoted in the topic and the
 * details by their JSON size, the rejections by the size of the payload kept.
 */
export const DeadLetter = z.object({
  /** The reason of the whole message, or of its first rejected reading. */
  reason: z.string(),
  /** At most DEADLETTER_DETAIL_MAX_BYTES as JSON. */
  detail: z.string(),
  tenant: z.string(),
  deviceId: z.string(),
  clientId: z.string(),
  /** The topic's first characters: at most DEADLETTER_TOPIC_MAX_BYTES as JSON. */
  topic: z.string(),
  /** The whole topic's size in bytes (UTF-8); absent in letters of gateways before it. */
  topicBytes: z.int().nonnegative().optional(),
  receivedAt: z.iso.datetime(),
  /** In a batch: the position of its first rejected reading. */
  index: z.int().nonnegative().optional(),
  /** In a batch: how many readings it held, and how many of them were rejected. */
  readings: z.int().nonnegative().optional(),
  rejected: z.int().nonnegative().optional(),
  /**
   * In a batch: the first rejected readings in order, at most DEADLETTER_MAX_REJECTIONS of them and
   * as many as fit, as JSON, in as many bytes as the payload kept (always the first).
   */
  rejections: z.array(DeadLetterRejection).optional(),
  /**
   * The payload's first bytes (DEADLETTER_MAX_PAYLOAD_BYTES at most, never cut inside a UTF-8
   * character): as text when it is UTF-8 that JSON does not make longer than base64, else base64.
   */
  payload: z.string(),
  payloadEncoding: z.enum(['utf8', 'base64']),
  /** The whole payload's size in bytes. */
  payloadBytes: z.int().nonnegative(),
  /** True when only the first bytes of the payload were kept. */
  truncated: z.boolean(),
});
export type DeadLetter = z.infer<typeof DeadLetter>;
/** A letter's topic as JSON: 256 characters of a plain topic, fewer when JSON escapes them. */
export const DEADLETTER_TOPIC_MAX_BYTES = 256;
/** A detail as JSON: what the gateway writes (~200 characters) plus room for quoted device input. */
export const DEADLETTER_DETAIL_MAX_BYTES = 512;
/** Rejected readings a letter lists at most. */
export const DEADLETTER_MAX_REJECTIONS = 100;

/** Connection lifecycle and device status, on `presence.{tenant}.{deviceId}`. */
export const PresenceEvent = z.object({
  tenant: z.string(),
  deviceId: z.string(),
  clientId: z.string(),
  /**
   * connected: CONNECT accepted; disconnected: clean DISCONNECT; lost: the connection dropped
   * without one (its will, if any, arrives just before as a `status` event); status: the device
   * published on its status topic (birth message or last will), payload in `status`.
   */
  type: z.enum(['connected', 'disconnected', 'lost', 'status']),
  reason: z.string().optional(),
  /**
   * A status payload (the gateway's STATUS_MAX_PAYLOAD_BYTES of it at most): the JSON value when the
   * whole payload is JSON no longer once written out again, else a string, of text or base64.
   */
  status: z.unknown().optional(),
  /** With a status: `json`, `utf8` (text) or `base64`; absent in events of gateways before it. */
  statusEncoding: z.enum(['json', 'utf8', 'base64']).optional(),
  /** With a status: the whole payload's size in bytes, and whether only its first bytes were kept. */
  statusBytes: z.int().nonnegative().optional(),
  statusTruncated: z.boolean().optional(),
  at: z.iso.datetime(),
  gateway: z.string(),
});
export type PresenceEvent = z.infer<typeof PresenceEvent>;

/**
 * A gateway's liveness, every `intervalMs` on `gateways.heartbeat.{gateway}` (core NATS). When a
 * gateway's heartbeats stop for HEARTBEAT_MISSES intervals, the presence owner takes every connection
 * it reported as lost: a killed gateway sends no `lost` events of its own.
 */
export const GatewayHeartbeat = z.object({
  gateway: z.string(),
  at: z.iso.datetime(),
  intervalMs: z.int().positive(),
  /** Device connections open on this gateway now. */
  connections: z.int().nonnegative(),
});
export type GatewayHeartbeat = z.infer<typeof GatewayHeartbeat>;
export const HEARTBEAT_MISSES = 3;

/** Bounds of one GatewayLiveSummary: its size stays far below NATS's max_payload whatever the fleet. */
export const LIVE_SUMMARY_MAX_READINGS = 100;
export const LIVE_SUMMARY_MAX_METRICS = 12;
export const LIVE_SUMMARY_MAX_TENANTS = 256;
export const LIVE_SUMMARY_MAX_REASONS = 64;
/** Dead-letter details are free text from the validators; a table cell needs only the start. */
export const LIVE_SUMMARY_DETAIL_MAX_CHARS = 200;

/**
 * What one gateway ingested in the last `intervalMs`, on `gateways.live.{gateway}` (core NATS), about
 * once a second: every gateway's live view merges the summaries of all gateways, so it shows the whole
 * fleet without receiving every event (README, Operations). Counts cover the interval; `reporting` is
 * the gateway's own count of devices with a reading in its reporting window; `readings` are the
 * latest of at most LIVE_SUMMARY_MAX_READINGS devices that sent one in the interval (the most recent;
 * `readingsLeftOut` counts the times a reading made room for a more recent device's).
 */
export const GatewayLiveSummary = z.object({
  gateway: z.string(),
  atMs: z.number(),
  intervalMs: z.number().nonnegative(),
  events: z.int().nonnegative(),
  deadletters: z.int().nonnegative(),
  reporting: z.int().nonnegative(),
  reportingCapped: z.boolean(),
  tenants: z
    .array(
      z.object({ tenant: z.string(), events: z.int().nonnegative(), deadletters: z.int().nonnegative() }),
    )
    .max(LIVE_SUMMARY_MAX_TENANTS + 1),
  reasons: z
    .array(
      z.object({
        reason: z.string(),
        count: z.int().positive(),
        last: z
          .object({
            tenant: z.string(),
            deviceId: z.string(),
            detail: z.string().max(LIVE_SUMMARY_DETAIL_MAX_CHARS),
            receivedAt: z.string(),
          })
          .optional(),
      }),
    )
    .max(LIVE_SUMMARY_MAX_REASONS + 1),
  readings: z
    .array(
      z.object({
        tenant: z.string(),
        deviceId: z.string(),
        type: z.string().optional(),
        ts: z.string().optional(),
        atMs: z.number(),
        metrics: z.array(z.tuple([z.string(), z.number(), z.string()])).max(LIVE_SUMMARY_MAX_METRICS),
        more: z.int().nonnegative(),
      }),
    )
    .max(LIVE_SUMMARY_MAX_READINGS),
  readingsLeftOut: z.int().nonnegative(),
});
export type GatewayLiveSummary = z.infer<typeof GatewayLiveSummary>;

/**
 * A gateway accepted a connection under `clientId`, on `gateways.takeover` (core NATS). MQTT gives a
 * client id one connection: a new one takes the old one over [MQTT-3.1.4-2]. Every other gateway
 * closes its connection under that id (`lost`, reason `taken over`) and drops its persistent session
 * for it: the device now lives at `gateway`.
 */
export const ClientTakeover = z.object({
  gateway: z.string(),
  clientId: z.string(),
  at: z.iso.datetime(),
});
export type ClientTakeover = z.infer<typeof ClientTakeover>;

/**
 * What the presence owner keeps per device in KV `presence` (key `{tenant}.{deviceId}`): online while
 * at least one connection is open. `reason` is the presence event type that last changed `online`
 * (`connected`, `disconnected`, `lost`, or `gateway_lost` when its gateway's heartbeats stopped).
 */
export const PresenceState = z.object({
  tenant: z.string(),
  deviceId: z.string(),
  online: z.boolean(),
  reason: z.string(),
  /** When `online` last changed. */
  since: z.iso.datetime(),
  connections: z.array(z.object({ gateway: z.string(), clientId: z.string(), since: z.iso.datetime() })),
  /** Last payload the device published on its status topic (birth message or will), if any. */
  status: z.unknown().optional(),
  /**
   * PRESENCE stream sequence of the last event that changed this state. The owner replays from its
   * checkpoint after a crash, which may lie behind what this state already holds: events up to here
   * are skipped, so a replay never flips a device back and forth.
   */
  seq: z.int().nonnegative().optional(),
});
export type PresenceState = z.infer<typeof PresenceState>;

/**
 * What PresenceState.status holds instead of a status payload larger than the presence owner keeps
 * (PRESENCE_MAX_STATUS_BYTES): its size and digest, so that a change is still seen as one.
 */
export const OversizedStatus = z.object({
  oversized: z.literal(true),
  /** Bytes of the payload as JSON. */
  bytes: z.int().positive(),
  /** SHA-256 of that JSON, base64url. */
  sha256: z.string(),
});
export type OversizedStatus = z.infer<typeof OversizedStatus>;

/**
 * One emission of a device window (on time, corrected or final). The fleet rollup merges these per
 * tenant and label; a later emission of the same device window replaces the earlier one, so replays
 * and corrections never double count. They travel in batches (DeviceWindowBatch).
 */
export const DeviceWindow = z.object({
  tenant: z.string(),
  deviceId: z.string(),
  /** The device's promoted labels (PROMOTED_LABELS) when it has them: the rollup groups by them. */
  labels: z.record(z.string(), z.string()),
  metric: z.string(),
  /** Formatted window size, as in the `window` tag. */
  window: z.string(),
  windowMs: z.int().positive(),
  startMs: z.int(),
  count: z.int().positive(),
  sum: z.number(),
  min: z.number(),
  max: z.number(),
  mean: z.number(),
  final: z.boolean(),
});
export type DeviceWindow = z.infer<typeof DeviceWindow>;

/**
 * The device windows one partition emitted at once for one tenant, in emission order, as a JSON array
 * on `windows.{tenant}`, stream WINDOWS. Batched because a busy partition emits thousands per second
 * and one stored message each would cost more than the windows themselves.
 */
export const DeviceWindowBatch = z.array(DeviceWindow).min(1);
export type DeviceWindowBatch = z.infer<typeof DeviceWindowBatch>;
/** Emissions per WINDOWS message at most (~250 bytes each: well under NATS' 1 MB payload limit). */
export const DEVICE_WINDOW_BATCH_MAX = 1_000;
