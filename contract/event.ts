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
 */
export const DeadLetter = z.object({
  /** The reason of the whole message, or of its first rejected reading. */
  reason: z.string(),
  detail: z.string(),
  tenant: z.string(),
  deviceId: z.string(),
  clientId: z.string(),
  topic: z.string(),
  receivedAt: z.iso.datetime(),
  /** In a batch: the position of its first rejected reading. */
  index: z.int().nonnegative().optional(),
  /** In a batch: how many readings it held, and how many of them were rejected. */
  readings: z.int().nonnegative().optional(),
  rejected: z.int().nonnegative().optional(),
  /** In a batch: the rejected readings in order, the first DEADLETTER_MAX_REJECTIONS of them. */
  rejections: z.array(DeadLetterRejection).optional(),
  payload: z.string(),
  payloadEncoding: z.enum(['utf8', 'base64']),
  payloadBytes: z.int().nonnegative(),
  /** True when only the first DEADLETTER_PAYLOAD_MAX_BYTES of the payload were kept. */
  truncated: z.boolean(),
});
export type DeadLetter = z.infer<typeof DeadLetter>;
export const DEADLETTER_PAYLOAD_MAX_BYTES = 64 * 1024;
/** Rejected readings a letter lists, at ~250 bytes each: the letter stays far below NATS' 1 MB. */
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
  status: z.unknown().optional(),
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
