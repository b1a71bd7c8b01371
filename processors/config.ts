import { z } from 'zod';
import { env } from '../common/config.js';
import { formatDuration, missingUnit, parseDuration } from '../common/duration.js';

export const DEFAULT_PROCESSOR_HTTP_PORT = 8081;
export const DEFAULT_WINDOWS = '10s,1m';
export const DEFAULT_ALLOWED_LATENESS = '5s';
export const DEFAULT_IDLE_TIMEOUT = '30s';
export const DEFAULT_LEASE_TTL = '10s';
export const DEFAULT_CHECKPOINT_INTERVAL = '1s';
export const DEFAULT_ROLE_STALL_TIMEOUT = '30s';
/** Four gateways' worth of the gateway's own cap (8 connections per device per gateway). */
export const DEFAULT_PRESENCE_MAX_CONNECTIONS = 32;
/** Twice the gateway's own cap on client ids (128 bytes); MQTT allows 65,535. */
export const DEFAULT_PRESENCE_MAX_CLIENT_ID_BYTES = 256;
/** The gateway's default MAX_PAYLOAD_BYTES: a status it accepts is kept whole. */
export const DEFAULT_PRESENCE_MAX_STATUS_BYTES = 64 * 1024;
export const DEFAULT_PRESENCE_MAX_GATEWAYS = 1_000;
/** A kept client id longer than this becomes `#sha256:` and 43 base64url characters (51 bytes). */
export const MIN_PRESENCE_MAX_CLIENT_ID_BYTES = 64;
/**
 * Distinct metrics one window of one device aggregates. Each costs a sketch per window and ten
 * series in `telemetry_agg`; devices here send a handful.
 */
export const DEFAULT_WINDOW_MAX_METRICS = 256;
/** A device silent this long, its windows all final, has its window and alert state freed. */
export const DEFAULT_DEVICE_STATE_TTL = '1h';
/** Watermarks of freed devices kept per partition: ~150 bytes each, 3 MiB per partition at most. */
export const DEFAULT_MAX_FREED_DEVICES = 20_000;
/**
 * Half of NATS's default max payload (1 MiB), checked against the server at start: ~4,600
 * watermarks with the longest ids, ~12,000 with 25-character ones.
 */
export const DEFAULT_CHECKPOINT_MAX_BYTES = 512 * 1024;
/** Below this a checkpoint holds too few devices to be of use. */
export const MIN_CHECKPOINT_MAX_BYTES = 4 * 1024;
/**
 * Fleet rows (metric × group value) one tenant has for one window instant: 100 metrics over 99
 * device types and sites is under it.
 */
export const DEFAULT_FLEET_MAX_ROWS_PER_TENANT = 10_000;
/** Lines waiting for the TSDB (per writer) past which partitions stop pulling: four full batches. */
export const DEFAULT_TSDB_MAX_PENDING_LINES = 20_000;
/** The issue's bound: results must not wait longer than this in the writer. */
export const MAX_FLUSH_INTERVAL_MS = 1_000;

/** `10s,1m`: ascending, each a multiple of the one before (windows must nest for exact replays). */
const windowSizes = z
  .string()
  .default(DEFAULT_WINDOWS)
  .transform((text, ctx) => {
    const parts = text.split(',').map((s) => s.trim());
    const sizes = parts.map((s) => parseDuration(s));
    if (sizes.some((s) => s === undefined || s < 1_000)) {
      const unitless = parts.map(missingUnit).find((m) => m !== undefined);
      ctx.addIssue({
        code: 'custom',
        message: unitless ?? 'expected durations of at least 1s, comma-separated, e.g. 10s,1m',
      });
      return z.NEVER;
    }
    const sorted = [...new Set(sizes as number[])].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]! % sorted[i - 1]! !== 0) {
        ctx.addIssue({
          code: 'custom',
          message: `${formatDuration(sorted[i]!)} is not a multiple of ${formatDuration(sorted[i - 1]!)}: windows must nest`,
        });
        return z.NEVER;
      }
    }
    return sorted;
  });

export const ProcessorConfigSchema = z.object({
  NATS_URL: env.natsUrl(),
  HTTP_PORT: env.port(DEFAULT_PROCESSOR_HTTP_PORT),
  BIND_HOST: z.string().default('0.0.0.0'),
  INFLUX_URL: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:8086'),
  INFLUX_TOKEN: z.string().default(''),
  INFLUX_ORG: z.string().min(1).default('iot'),
  INFLUX_BUCKET: z.string().min(1).default('telemetry'),
  WINDOWS: windowSizes,
  ALLOWED_LATENESS: env.duration(DEFAULT_ALLOWED_LATENESS),
  IDLE_TIMEOUT: env.duration(DEFAULT_IDLE_TIMEOUT),
  LEASE_TTL: env.duration(DEFAULT_LEASE_TTL),
  CHECKPOINT_INTERVAL: env.duration(DEFAULT_CHECKPOINT_INTERVAL),
  ALERT_RULES_FILE: z.string().optional(),
  INSTANCE_ID: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, _ and - only')
    .optional(),
  STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  LOG_LEVEL: env.logLevel(),
  LOG_FORMAT: env.logFormat(),
  /** A role (presence, fleet rollup) stuck this long on the same work makes /readyz answer 503. */
  ROLE_STALL_TIMEOUT: env.duration(DEFAULT_ROLE_STALL_TIMEOUT),
  WINDOW_MAX_METRICS: env.positiveInt(DEFAULT_WINDOW_MAX_METRICS),
  DEVICE_STATE_TTL: env.duration(DEFAULT_DEVICE_STATE_TTL),
  MAX_FREED_DEVICES: env.nonNegativeInt(DEFAULT_MAX_FREED_DEVICES),
  FLEET_MAX_ROWS_PER_TENANT: env.positiveInt(DEFAULT_FLEET_MAX_ROWS_PER_TENANT),
  TSDB_MAX_PENDING_LINES: env.positiveInt(DEFAULT_TSDB_MAX_PENDING_LINES),
  CHECKPOINT_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(MIN_CHECKPOINT_MAX_BYTES)
    .default(DEFAULT_CHECKPOINT_MAX_BYTES),
  PRESENCE_MAX_CONNECTIONS: env.positiveInt(DEFAULT_PRESENCE_MAX_CONNECTIONS),
  PRESENCE_MAX_CLIENT_ID_BYTES: z.coerce
    .number()
    .int()
    .min(MIN_PRESENCE_MAX_CLIENT_ID_BYTES)
    .default(DEFAULT_PRESENCE_MAX_CLIENT_ID_BYTES),
  PRESENCE_MAX_STATUS_BYTES: env.positiveInt(DEFAULT_PRESENCE_MAX_STATUS_BYTES),
  PRESENCE_MAX_GATEWAYS: env.positiveInt(DEFAULT_PRESENCE_MAX_GATEWAYS),
});

export type ProcessorConfig = z.output<typeof ProcessorConfigSchema>;
