import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fitCheckpoint } from '../../processors/consume/checkpoint-fit.js';
import type { ProcessorLimit } from '../../processors/metrics.js';
import type { WindowResult, WindowSettings } from '../../processors/windows/device-windows.js';
import {
  type PartitionCheckpoint,
  type PartitionReading,
  type PartitionWindowSettings,
  PartitionWindows,
} from '../../processors/windows/partition-windows.js';

const S = 1_000;
const settings: WindowSettings = {
  sizesMs: [10 * S, 60 * S],
  allowedLatenessMs: 5 * S,
  idleTimeoutMs: 30 * S,
};
const T0 = 1_800_000_000_000;

/** What InfluxDB keeps: the last write per series and time. */
type Tsdb = Map<string, WindowResult>;
const keyOf = (r: WindowResult) => `${r.deviceId}|${r.metric}|${r.windowMs}|${r.startMs}`;
const write = (tsdb: Tsdb, results: WindowResult[]) => {
  for (const r of results) tsdb.set(keyOf(r), r);
};

interface Step {
  reading: PartitionReading;
  seq: number;
  wallMs: number;
}

/** Generated readings as steps of one device clock: each advances it, and may be late by some. */
function toSteps(raw: { device: string; advanceMs: number; lateByMs: number; value: number }[]): Step[] {
  let clock = T0;
  return raw.map((r, i) => {
    clock += r.advanceMs;
    return {
      seq: i + 1,
      wallMs: clock,
      reading: {
        tenant: 'acme',
        deviceId: r.device,
        id: `e${i}`,
        tsMs: clock - r.lateByMs,
        metrics: { m: { value: r.value } },
      },
    };
  });
}

/** Runs steps through a partition; returns the checkpoint taken after step `checkpointAt`, if asked. */
function run(partition: PartitionWindows, steps: Step[], tsdb: Tsdb, checkpointAt?: number) {
  let checkpoint: ReturnType<PartitionWindows['checkpoint']> | undefined;
  steps.forEach((step, i) => {
    partition.add(step.reading, step.seq, step.wallMs);
    write(tsdb, partition.collect(step.wallMs));
    if (i === checkpointAt) checkpoint = partition.checkpoint();
  });
  return checkpoint;
}

const flush = (partition: PartitionWindows, tsdb: Tsdb, wallMs: number) =>
  write(tsdb, partition.collect(wallMs));

const stepsArb = fc
  .array(
    fc.record({
      device: fc.constantFrom('a', 'b', 'c'),
      advanceMs: fc.integer({ min: 0, max: 4 * S }),
      // Negative: the device's clock runs ahead of the gateway's.
      lateByMs: fc.oneof(
        fc.constant(0),
        fc.integer({ min: 0, max: 20 * S }),
        fc.integer({ min: -30 * S, max: 0 }),
      ),
      value: fc.integer({ min: -100, max: 100 }),
    }),
    { minLength: 1, maxLength: 120 },
  )
  .map(toSteps);

describe('PartitionWindows', () => {
  it('acknowledges up to just before the first reading of any open window', () => {
    const p = new PartitionWindows(settings);
    expect(p.ackableSeq).toBe(0);
    p.add({ tenant: 't', deviceId: 'a', id: '1', tsMs: T0 + S, metrics: { m: { value: 1 } } }, 5, T0);
    p.add({ tenant: 't', deviceId: 'b', id: '2', tsMs: T0 + S, metrics: { m: { value: 1 } } }, 6, T0);
    expect(p.ackableSeq).toBe(4);
    p.collect(T0 + 200 * S); // both idle long enough: every window final
    expect(p.ackableSeq).toBe(6);
  });

  it('does not reopen a window that was final at the checkpoint when part of it is replayed', () => {
    const r = (deviceId: string, tsS: number, value: number, id: string): PartitionReading => ({
      tenant: 't',
      deviceId,
      id,
      tsMs: T0 + tsS * S,
      metrics: { m: { value } },
    });
    const steps: Step[] = [
      { seq: 1, wallMs: T0 + 2 * S, reading: r('a', 2, 10, 'a1') },
      { seq: 2, wallMs: T0 + 3 * S, reading: r('b', 3, 0, 'b1') }, // b's open window holds the ack floor at 1
      { seq: 3, wallMs: T0 + 20 * S, reading: r('a', 20, 20, 'a2') },
      { seq: 4, wallMs: T0 + 50 * S, reading: r('b', 50, 0, 'b2') },
      { seq: 5, wallMs: T0 + 52 * S, reading: r('a', 70, 30, 'a3') }, // a's clock is ahead: its first minute is final
    ];
    const tsdb: Tsdb = new Map();
    const first = new PartitionWindows(settings);
    const checkpoint = run(first, steps, tsdb, 4)!;
    expect(checkpoint.ackSeq).toBe(1);
    const minuteOfA = () => tsdb.get(`a|m|${60 * S}|${T0}`)!;
    expect(minuteOfA()).toMatchObject({ final: true, values: { count: 2, sum: 30 } });
    const restarted = new PartitionWindows(settings, checkpoint);
    run(restarted, steps.slice(1), tsdb); // a2 comes again, a1 does not
    flush(restarted, tsdb, T0 + 500 * S);
    expect(minuteOfA().values).toMatchObject({ count: 2, sum: 30 });
  });

  it('ends with the same results in the TSDB whether or not it crashed and replayed from a checkpoint', () => {
    fc.assert(
      fc.property(stepsArb, fc.nat(), fc.nat(), (steps, a, b) => {
        const end = steps.at(-1)!.wallMs + 500 * S;
        const expected: Tsdb = new Map();
        const clean = new PartitionWindows(settings);
        run(clean, steps, expected);
        flush(clean, expected, end);

        const checkpointAt = a % steps.length;
        const crashAfter = checkpointAt + (b % (steps.length - checkpointAt));
        const tsdb: Tsdb = new Map();
        const first = new PartitionWindows(settings);
        const checkpoint = run(first, steps.slice(0, crashAfter + 1), tsdb, checkpointAt)!;
        // Crash: in-memory state is gone; what was written stays. Restart and replay after ackSeq.
        const restarted = new PartitionWindows(settings, JSON.parse(JSON.stringify(checkpoint)));
        run(
          restarted,
          steps.filter((s) => s.seq > checkpoint.ackSeq),
          tsdb,
        );
        flush(restarted, tsdb, end);

        const finalOnly = (t: Tsdb) => [...t.entries()].map(([k, r]) => [k, r.values]).sort();
        expect(finalOnly(tsdb)).toEqual(finalOnly(expected));
      }),
      { numRuns: 300 },
    );
  });

  it('never counts a reading twice, whatever the order (counts per device add up)', () => {
    fc.assert(
      fc.property(stepsArb, (steps) => {
        const tsdb: Tsdb = new Map();
        const p = new PartitionWindows(settings);
        let late = 0;
        for (const s of steps) {
          if (p.add(s.reading, s.seq, s.wallMs).lateFor.includes(60 * S)) late++;
          write(tsdb, p.collect(s.wallMs));
        }
        flush(p, tsdb, steps.at(-1)!.wallMs + 500 * S);
        const counted = [...tsdb.values()]
          .filter((r) => r.windowMs === 60 * S)
          .reduce((n, r) => n + r.values.count, 0);
        expect(counted + late).toBe(steps.length);
      }),
      { numRuns: 300 },
    );
  });
});

describe('PartitionWindows freeing silent devices', () => {
  const TTL = 120 * S;
  const freeing: PartitionWindowSettings = { ...settings, deviceStateTtlMs: TTL };
  const at = (device: string, tsMs: number, id: string, value = 1): PartitionReading => ({
    tenant: 'acme',
    deviceId: device,
    id,
    tsMs,
    metrics: { m: { value } },
  });
  const counting = () => {
    const hits: ProcessorLimit[] = [];
    return { hits, onLimit: (l: ProcessorLimit, n = 1) => hits.push(...Array<ProcessorLimit>(n).fill(l)) };
  };

  it('frees a device silent for DEVICE_STATE_TTL and keeps its watermark: a late reading stays late', () => {
    const { hits, onLimit } = counting();
    const p = new PartitionWindows(freeing, undefined, onLimit);
    const tsdb: Tsdb = new Map();
    p.add(at('a', T0 + S, 'a1', 10), 1, T0 + S);
    p.add(at('a', T0 + 2 * S, 'a2', 20), 2, T0 + 2 * S);
    flush(p, tsdb, T0 + 100 * S); // idle: both windows final
    expect(p.deviceCount).toBe(1); // silent for 98 s: kept
    flush(p, tsdb, T0 + 2 * S + TTL);
    expect([p.deviceCount, p.freedCount]).toEqual([0, 1]);
    expect(hits).toEqual(['DEVICE_STATE_TTL']);
    const minute = tsdb.get(`a|m|${60 * S}|${T0}`)!;
    expect(minute).toMatchObject({ final: true, values: { count: 2, sum: 30 } });
    // Much later, a reading of that minute: without the watermark it would open it again, alone.
    expect(p.add(at('a', T0 + 3 * S, 'a3', 500), 3, T0 + 1_000 * S).lateFor).toEqual([10 * S, 60 * S]);
    flush(p, tsdb, T0 + 2_000 * S);
    expect(tsdb.get(`a|m|${60 * S}|${T0}`)).toBe(minute);
  });

  it('folds the longest-freed watermarks into the floor past MAX_FREED_DEVICES, which only ever errs late', () => {
    const { hits, onLimit } = counting();
    const p = new PartitionWindows({ ...freeing, maxFreedDevices: 1 }, undefined, onLimit);
    const tsdb: Tsdb = new Map();
    p.add(at('a', T0 + S, 'a1'), 1, T0 + S);
    p.add(at('b', T0 + 61 * S, 'b1'), 2, T0 + 61 * S);
    flush(p, tsdb, T0 + 61 * S + TTL);
    expect(hits).toEqual(['DEVICE_STATE_TTL', 'DEVICE_STATE_TTL', 'MAX_FREED_DEVICES']);
    expect(p.freedCount).toBe(1);
    // a was folded: the floor is at least its watermark, so its final minute stays closed.
    expect(p.add(at('a', T0 + 2 * S, 'a2'), 3, T0 + 1_000 * S).lateFor).toEqual([10 * S, 60 * S]);
    // A device never seen meets the floor too: its reading from before it is late, not aggregated.
    expect(p.add(at('new', T0 + 5 * S, 'n1'), 4, T0 + 1_000 * S).lateFor).toEqual([10 * S, 60 * S]);
    expect(p.add(at('new', T0 + 3_600 * S, 'n2'), 5, T0 + 1_000 * S).lateFor).toEqual([]);
  });

  it('keeps the watermarks a replay needs exactly until it has caught up, whatever MAX_FREED_DEVICES says', () => {
    const restored: PartitionCheckpoint = {
      ackSeq: 10,
      watermarks: { 'acme/a': T0 + 55 * S },
      freed: { 'acme/b': T0 + 55 * S, 'acme/c': T0 + 30 * S },
    };
    const { hits, onLimit } = counting();
    const p = new PartitionWindows({ ...freeing, maxFreedDevices: 0 }, restored, onLimit);
    expect(hits).toEqual(['MAX_FREED_DEVICES', 'MAX_FREED_DEVICES']);
    expect(p.floorWatermark).toBe(T0 + 55 * S);
    expect(p.checkpointPlan().required).toEqual([['acme/a', T0 + 55 * S]]);
    p.replayCaughtUp();
    expect(p.freedCount).toBe(0);
    expect(p.checkpointPlan().required).toEqual([]);
  });

  /** Freed sooner than most silences in sparseArb last, and than its latest readings are late. */
  const eager: PartitionWindowSettings = { ...settings, deviceStateTtlMs: 40 * S };
  /** Like stepsArb, with long silences, more devices and readings up to 2 minutes late. */
  const sparseArb = fc
    .array(
      fc.record({
        device: fc.constantFrom('a', 'b', 'c', 'd', 'e'),
        advanceMs: fc.oneof(fc.integer({ min: 0, max: 4 * S }), fc.integer({ min: 60 * S, max: 300 * S })),
        lateByMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 120 * S })),
        value: fc.integer({ min: -100, max: 100 }),
      }),
      { minLength: 1, maxLength: 80 },
    )
    .map(toSteps);
  const results = (t: Tsdb) => [...t.entries()].map(([k, r]) => [k, r.values]).sort();

  it('changes no result by freeing while the watermarks fit, with or without a crash in between', () => {
    fc.assert(
      fc.property(sparseArb, fc.nat(), fc.nat(), (steps, a, b) => {
        const end = steps.at(-1)!.wallMs + 1_000 * S;
        const expected: Tsdb = new Map();
        const kept = new PartitionWindows(settings);
        run(kept, steps, expected);
        flush(kept, expected, end);

        const checkpointAt = a % steps.length;
        const crashAfter = checkpointAt + (b % (steps.length - checkpointAt));
        const tsdb: Tsdb = new Map();
        const first = new PartitionWindows(eager);
        let checkpoint: PartitionCheckpoint | undefined;
        steps.slice(0, crashAfter + 1).forEach((step, i) => {
          first.add(step.reading, step.seq, step.wallMs);
          write(tsdb, first.collect(step.wallMs));
          if (i === checkpointAt) checkpoint = fitCheckpoint(first.checkpointPlan(), [], 1 << 20).checkpoint;
        });
        const restarted = new PartitionWindows(eager, JSON.parse(JSON.stringify(checkpoint)));
        run(
          restarted,
          steps.filter((s) => s.seq > checkpoint!.ackSeq),
          tsdb,
        );
        flush(restarted, tsdb, end);
        expect(results(tsdb)).toEqual(results(expected));
      }),
      { numRuns: 300 },
    );
  });

  it('never emits a window again once it was final, however few watermarks it may keep', () => {
    fc.assert(
      fc.property(sparseArb, fc.nat({ max: 2 }), (steps, maxFreedDevices) => {
        const p = new PartitionWindows({ ...eager, maxFreedDevices });
        const finalised = new Set<string>();
        let late = 0;
        const tsdb: Tsdb = new Map();
        const take = (emitted: WindowResult[]) => {
          for (const r of emitted) {
            expect(finalised.has(keyOf(r))).toBe(false);
            if (r.final) finalised.add(keyOf(r));
          }
          write(tsdb, emitted);
        };
        for (const s of steps) {
          if (p.add(s.reading, s.seq, s.wallMs).lateFor.includes(60 * S)) late++;
          take(p.collect(s.wallMs));
        }
        take(p.collect(steps.at(-1)!.wallMs + 1_000 * S));
        const counted = [...tsdb.values()]
          .filter((r) => r.windowMs === 60 * S)
          .reduce((n, r) => n + r.values.count, 0);
        expect(counted + late).toBe(steps.length);
        expect(p.freedCount).toBeLessThanOrEqual(maxFreedDevices);
      }),
      { numRuns: 300 },
    );
  });
});
