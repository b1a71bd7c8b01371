import { z } from 'zod';
import { isMetricName } from './ids.js';

/**
 * What devices send on `devices/{id}/telemetry`, by version, and how each version becomes a
 * DeviceReading. Adding version 3 means one schema and one upcaster in PAYLOAD_VERSIONS; parsing,
 * normalisation and everything downstream only ever see a DeviceReading.
 *
 * Issues raised here carry `params.reason`, the dead-letter reason code the gateway reports; issues
 * without one are named by their path (`ts` → TS_INVALID, `seq` → SEQ_INVALID, `…unit` → UNIT_UNKNOWN).
 */
export const MAX_METRICS_PER_READING = 256;
export const MAX_UNIT_CHARS = 32;

export interface DeviceMetric {
  name: string;
  value: number;
  unit?: string;
}

export interface DeviceReading {
  /** Epoch milliseconds, or undefined when the device sent no timestamp. */
  ts?: number;
  seq?: number;
  metrics: DeviceMetric[];
}

const reason = (code: string) => ({ params: { reason: code } });

/** Finite numbers; booleans are accepted as 1 and 0 so that switches and flags can be charted. */
const MetricValue = z.unknown().transform((value, ctx): number => {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  ctx.addIssue({
    code: 'custom',
    message:
      typeof value === 'number' ? 'value is not finite' : `value must be a number, got ${typeof value}`,
    ...reason('VALUE_INVALID'),
  });
  return z.NEVER;
});

const Timestamp = z.union([z.number().nonnegative(), z.iso.datetime({ offset: true })], {
  error: 'ts must be epoch milliseconds or an ISO-8601 date-time with zone',
});

const Seq = z.int().nonnegative();

/**
 * A metrics object whose keys are metric names. JSON.parse keeps a `__proto__` key as an own
 * property and zod's record would silently drop it, so reserved keys are refused before it runs.
 */
function metricsOf<T extends z.ZodType>(value: T) {
  return z
    .unknown()
    .superRefine((metrics, ctx) => {
      if (typeof metrics !== 'object' || metrics === null || Array.isArray(metrics)) {
        ctx.addIssue({ code: 'custom', message: 'metrics must be an object', ...reason('SCHEMA_INVALID') });
        return;
      }
      const names = Object.keys(metrics);
      if (names.length === 0)
        ctx.addIssue({ code: 'custom', message: 'no metrics', ...reason('METRICS_EMPTY') });
      if (names.length > MAX_METRICS_PER_READING) {
        ctx.addIssue({
          code: 'custom',
          message: `${names.length} metrics, at most ${MAX_METRICS_PER_READING} allowed`,
          ...reason('TOO_MANY_METRICS'),
        });
      }
      const bad = names.find((name) => !isMetricName(name));
      if (bad !== undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `invalid metric name '${bad.slice(0, 80)}'`,
          path: [bad],
          ...reason('METRIC_NAME_INVALID'),
        });
      }
    })
    .pipe(z.record(z.string(), value));
}

export const PayloadV1 = z.object({
  v: z.literal(1).optional(),
  ts: Timestamp.optional(),
  seq: Seq.optional(),
  metrics: metricsOf(MetricValue),
});

export const PayloadV2 = z.object({
  v: z.literal(2),
  ts: Timestamp.optional(),
  seq: Seq.optional(),
  metrics: metricsOf(
    z.object({
      value: MetricValue,
      unit: z.string().min(1).max(MAX_UNIT_CHARS).optional(),
    }),
  ),
});

function tsToMillis(ts: number | string | undefined): number | undefined {
  return typeof ts === 'string' ? Date.parse(ts) : ts;
}

interface PayloadVersion<S extends z.ZodType> {
  schema: S;
  upcast: (payload: z.output<S>) => DeviceReading;
}

function version<S extends z.ZodType>(v: PayloadVersion<S>): PayloadVersion<S> {
  return v;
}

export const PAYLOAD_VERSIONS = {
  1: version({
    schema: PayloadV1,
    upcast: (p) => ({
      ts: tsToMillis(p.ts),
      seq: p.seq,
      metrics: Object.entries(p.metrics).map(([name, value]) => ({ name, value })),
    }),
  }),
  2: version({
    schema: PayloadV2,
    upcast: (p) => ({
      ts: tsToMillis(p.ts),
      seq: p.seq,
      metrics: Object.entries(p.metrics).map(([name, m]) =>
        m.unit === undefined ? { name, value: m.value } : { name, value: m.value, unit: m.unit },
      ),
    }),
  }),
} as const;

export type PayloadVersionNumber = keyof typeof PAYLOAD_VERSIONS;

/** A payload without `v` is version 1, the shape the first devices shipped with. */
export function payloadVersionOf(raw: unknown): number {
  if (typeof raw === 'object' && raw !== null && 'v' in raw) return (raw as { v: unknown }).v as number;
  return 1;
}

export function isKnownPayloadVersion(v: unknown): v is PayloadVersionNumber {
  return typeof v === 'number' && Object.hasOwn(PAYLOAD_VERSIONS, v);
}
