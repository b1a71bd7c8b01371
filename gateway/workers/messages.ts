import type { MetricObjectWithValues, MetricValue } from 'prom-client';

/**
 * What the cluster primary and its gateway workers say to each other over the IPC channel that
 * node:cluster opens. The `gateway:` prefix keeps them apart from node's own and prom-client's.
 */
export type WorkerMetrics = MetricObjectWithValues<MetricValue<string>>[];

/** Worker → primary. */
export type FromWorker =
  /** The gateway is made: NATS connected, streams and registry in place, listeners open. */
  | { type: 'gateway:started'; gateway: string }
  /** Sent every STATUS_INTERVAL_MS: what keeps the worker's gateway from being ready (Gateway.notReady). */
  | { type: 'gateway:status'; gateway: string | undefined; notReady: string[] }
  /** The answer to a metrics request: the gateway's registry as JSON, empty before the gateway is made. */
  | { type: 'gateway:metrics'; requestId: number; metrics: WorkerMetrics };

/** Primary → worker. */
export type ToWorker = { type: 'gateway:metrics?'; requestId: number };

/** How often a worker reports its readiness. */
export const STATUS_INTERVAL_MS = 500;
/** A worker silent for this long (stuck, or its event loop blocked) counts as not ready. */
export const STATUS_STALE_MS = 3_000;

const TYPES = new Set(['gateway:started', 'gateway:status', 'gateway:metrics', 'gateway:metrics?']);

/** True for our messages; node:cluster delivers its own internal ones and prom-client's on the same channel. */
export function isGatewayMessage(message: unknown): message is FromWorker | ToWorker {
  return (
    typeof message === 'object' &&
    message !== null &&
    TYPES.has((message as { type?: unknown }).type as string)
  );
}
