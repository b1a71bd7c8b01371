import type { MqttClient } from 'mqtt';
import { telemetryTopic } from '../../contract/topics.js';

/** Publish → PUBACK times of well-behaved devices, the measure of whether one device slows others. */
export interface Latencies {
  sent: number;
  acked: number;
  failed: number;
  p50: number;
  p99: number;
  max: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Every client publishes a QoS 1 reading every `intervalMs` for `durationMs`, spread over the
 * interval rather than all at once; each publish → PUBACK time is kept. Waits up to `drainMs` for
 * the last PUBACKs.
 */
export async function measurePubacks(
  clients: readonly MqttClient[],
  deviceIds: readonly string[],
  durationMs: number,
  intervalMs = 100,
  drainMs = 15_000,
): Promise<Latencies> {
  const times: number[] = [];
  let sent = 0;
  let failed = 0;
  const pending: Promise<void>[] = [];
  const end = Date.now() + durationMs;
  await Promise.all(
    clients.map(async (client, i) => {
      await sleep((intervalMs * i) / clients.length);
      while (Date.now() < end) {
        const started = performance.now();
        sent++;
        pending.push(
          client
            .publishAsync(
              telemetryTopic(deviceIds[i]!),
              JSON.stringify({ ts: Date.now(), metrics: { t: i } }),
              {
                qos: 1,
              },
            )
            .then(
              () => void times.push(performance.now() - started),
              () => void failed++,
            ),
        );
        await sleep(intervalMs);
      }
    }),
  );
  await Promise.race([Promise.all(pending), sleep(drainMs)]);
  times.sort((x, y) => x - y);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? Number.NaN;
  return { sent, acked: times.length, failed, p50: at(0.5), p99: at(0.99), max: times.at(-1) ?? Number.NaN };
}

export const showLatencies = (l: Latencies) =>
  `${l.acked}/${l.sent} acked, p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`;
