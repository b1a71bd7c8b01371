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

/** A rejected message or reading, on `deadletter.{tenant}.{reason}`. Nothing is dropped silently. */
export const DeadLetter = z.object({
  reason: z.string(),
  detail: z.string(),
  tenant: z.string(),
  deviceId: z.string(),
  clientId: z.string(),
  topic: z.string(),
  receivedAt: z.iso.datetime(),
  /** Position in a batch when only one reading of it was rejected. */
  index: z.int().nonnegative().optional(),
  payload: z.string(),
  payloadEncoding: z.enum(['utf8', 'base64']),
  payloadBytes: z.int().nonnegative(),
  /** True when only the first DEADLETTER_PAYLOAD_MAX_BYTES of the payload were kept. */
  truncated: z.boolean(),
});
export type DeadLetter = z.infer<typeof DeadLetter>;
export const DEADLETTER_PAYLOAD_MAX_BYTES = 64 * 1024;

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
