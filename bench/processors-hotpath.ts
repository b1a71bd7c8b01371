import { parseArgs } from 'node:util';
import { decodeCanonicalEvent } from '../contract/decode-canonical-event.js';
import { decodeDeviceWindowBatch } from '../contract/decode-device-window-batch.js';
import { DEVICE_WINDOW_BATCH_MAX, type DeviceWindow } from '../contract/event.js';
import { partitionOf, TELEMETRY_PARTITIONS } from '../contract/subjects.js';
import { deviceWindow } from '../processors/effects.js';
import { FleetRollup } from '../processors/rollups/fleet-rollup.js';
import { aggregateLine, telemetryLine } from '../processors/sink/lines.js';
import type { WindowResult } from '../processors/windows/device-windows.js';
import { PartitionWindows } from '../processors/windows/partition-windows.js';
import { deviceName, encodeReading } from './canonical-events.js';
import { median } from './stats.js';

/**
 * `tsx bench/processors-hotpath.ts`: the CPU a processor spends per event in its own code, without
 * NATS or a TSDB: decode, windows, raw and window lines, device windows as WINDOWS batches (JSON both
 * ways) and the fleet rollup, for the same events as bench/processors.ts (2,000 devices, 3 metrics,
 * 2 s apart). CPU time of this process (process.cpuUsage), so other load on the machine changes it
 * far less than a rate. What it leaves out (NATS client, the writer's requests, checkpoints) is what
 * `npm run bench:processors` adds.
 */
const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '200000' },
    devices: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '5' },
  },
});
const EVENTS = Number(values.events);
const DEVICES = Number(values.devices);
const ROUNDS = Number(values.rounds);
const INTERVAL_MS = 2_000;
const HAND_OVER = 1_000;

/** A reading as the gateway stores it (bench/canonical-events.ts), and the partition it goes to. */
function encode(d: number, seq: number, tsMs: number): { partition: number; data: Uint8Array } {
  const { data } = encodeReading('bench', d, seq, tsMs, tsMs + 50);
  return { partition: partitionOf('bench', deviceName(d)), data };
}

const t0 = Math.floor(Date.now() / 60_000) * 60_000 - 3_600_000;
const events = Array.from({ length: EVENTS }, (_, i) =>
  encode(i % DEVICES, Math.floor(i / DEVICES), t0 + Math.floor(i / DEVICES) * INTERVAL_MS + (i % DEVICES)),
);

function round(): { usPerEvent: number; lines: number; windows: number } {
  const partitions = Array.from(
    { length: TELEMETRY_PARTITIONS },
    () => new PartitionWindows({ sizesMs: [10_000, 60_000], allowedLatenessMs: 5_000, idleTimeoutMs: 5_000 }),
  );
  const rollup = new FleetRollup({ horizonMs: 10 * 3_600_000 });
  let lines = 0;
  let windows = 0;
  const publish = (results: WindowResult[]) => {
    for (const r of results) {
      if (aggregateLine(r).length > 0) lines++;
    }
    windows += results.length;
    const batch: DeviceWindow[] = results.map(deviceWindow);
    for (let i = 0; i < batch.length; i += DEVICE_WINDOW_BATCH_MAX) {
      const body = Buffer.from(JSON.stringify(batch.slice(i, i + DEVICE_WINDOW_BATCH_MAX)));
      for (const dw of decodeDeviceWindowBatch(body) ?? []) rollup.add(dw, dw.startMs + dw.windowMs);
    }
  };
  const started = process.cpuUsage();
  let wall = Date.now();
  for (let i = 0; i < events.length; i++) {
    const { partition, data } = events[i]!;
    const event = decodeCanonicalEvent(data);
    if (!event) throw new Error('bench event rejected');
    partitions[partition]!.add(event, i + 1, wall);
    if (telemetryLine(event) !== undefined) lines++;
    if ((i + 1) % HAND_OVER === 0) {
      wall += 10;
      for (const p of partitions) publish(p.collect(wall, true));
    }
  }
  // The last windows close on wall time, as a quiet device's do.
  for (const p of partitions) publish(p.collect(wall + 3_600_000));
  rollup.collect(t0 + 3_600_000);
  const used = process.cpuUsage(started);
  return { usPerEvent: (used.user + used.system) / events.length, lines, windows };
}

const results = Array.from({ length: ROUNDS }, round);
for (const [i, r] of results.entries())
  console.log(
    `round ${i + 1}: ${r.usPerEvent.toFixed(2)} µs CPU per event (${r.lines} lines, ${r.windows} window emissions)`,
  );
console.log(
  `median ${median(results.map((r) => r.usPerEvent)).toFixed(2)} µs CPU per event over ${ROUNDS} rounds of ${EVENTS} events`,
);
