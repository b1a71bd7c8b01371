import { createLogger } from '../../../common/logger.js';
import type { PresenceEvent } from '../../../contract/event.js';
import { createGatewayMetrics, type GatewayMetrics } from '../../../gateway/metrics.js';

/** Stand-ins for the broker modules' unit tests: real metrics and a silent logger. */
export const log = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent');

export function metrics(): GatewayMetrics {
  return createGatewayMetrics({ inFlight: () => 0, natsConnected: () => true, connections: () => 0 });
}

/** The value of one labelled child of a counter, 0 when it was never touched. */
export async function count(
  m: GatewayMetrics,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = await m.registry.getSingleMetric(name)?.get();
  const found = metric?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return found?.value ?? 0;
}

export const limitCount = (m: GatewayMetrics, limit: string) =>
  count(m, 'gateway_limit_reached_total', { limit });

/** A plain object standing in for an aedes client where only these members are used. */
export interface FakeClient {
  id: string;
  closed: boolean;
  closes: number;
  paused: number;
  resumed: number;
  _disconnected: boolean;
  close(): void;
  pause(): void;
  resume(): void;
}

export function fakeClient(id: string): FakeClient {
  return {
    id,
    closed: false,
    closes: 0,
    paused: 0,
    resumed: 0,
    _disconnected: false,
    close() {
      this.closes++;
      this.closed = true;
    },
    pause() {
      this.paused++;
    },
    resume() {
      this.resumed++;
    },
  };
}

type PresenceInput = Omit<PresenceEvent, 'at' | 'gateway'>;

/** Records presence events instead of publishing them. */
export function presenceRecorder() {
  const events: PresenceInput[] = [];
  return {
    events,
    publish(event: PresenceInput, done?: (err?: Error) => void) {
      events.push(event);
      done?.();
    },
    status: (payload: Uint8Array) => ({
      status: Buffer.from(payload).toString(),
      statusEncoding: 'utf8' as const,
      statusBytes: payload.byteLength,
      statusTruncated: false,
    }),
  };
}
