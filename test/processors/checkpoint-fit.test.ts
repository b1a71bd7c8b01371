import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AlertTransition } from '../../contract/index.js';
import { fitCheckpoint } from '../../processors/consume/checkpoint-fit.js';
import type { CheckpointPlan } from '../../processors/windows/partition-windows.js';

const T0 = 1_800_000_000_000;
/** The longest keys there are: a 32-character tenant and a 64-character device id. */
const key = (i: number) => `${'t'.repeat(32)}/${String(i).padStart(64, 'd')}`;
const entries = (from: number, n: number, watermark = (i: number) => T0 + i) =>
  Array.from({ length: n }, (_, i) => [key(from + i), watermark(from + i)] as [string, number]);
const alert = (i: number): AlertTransition => ({
  tenant: 'acme',
  deviceId: `d${i}`,
  rule: 'too-hot',
  severity: 'critical',
  state: 'firing',
  value: 90,
  atMs: T0,
  message: 'temperature 90 > 80 for 30s',
});
const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

describe('fitCheckpoint', () => {
  it('keeps everything when it fits', () => {
    const plan: CheckpointPlan = {
      ackSeq: 7,
      floor: Number.NEGATIVE_INFINITY,
      required: entries(0, 2),
      optional: entries(2, 2),
    };
    const fitted = fitCheckpoint(plan, [alert(1)], 64 * 1024);
    expect(fitted).toMatchObject({ foldedWatermarks: 0, alertsLeftOut: 0 });
    // Saved without its message: the next transition has its own, and it halves an alert's size.
    const { message: _, ...saved } = alert(1);
    expect(fitted.checkpoint).toEqual({
      ackSeq: 7,
      watermarks: Object.fromEntries(plan.required),
      freed: Object.fromEntries(plan.optional),
      firing: [saved],
    });
  });

  it('stays under CHECKPOINT_MAX_BYTES with 30,000 devices, where the whole checkpoint would take 3 MiB', () => {
    const plan: CheckpointPlan = {
      ackSeq: 1,
      floor: Number.NEGATIVE_INFINITY,
      required: entries(0, 100),
      optional: entries(100, 30_000),
    };
    const whole = fitCheckpoint(plan, [], Number.POSITIVE_INFINITY).checkpoint;
    expect(bytes(whole)).toBeGreaterThan(3 * 1024 * 1024); // over NATS's 1 MiB max payload
    const max = 512 * 1024;
    const fitted = fitCheckpoint(
      plan,
      Array.from({ length: 500 }, (_, i) => alert(i)),
      max,
    );
    expect(bytes(fitted.checkpoint)).toBeLessThanOrEqual(max);
    expect(fitted.alertsLeftOut).toBe(0);
    // The most recently active are kept; the floor covers every one left out.
    const kept = Object.keys(fitted.checkpoint!.freed!);
    expect(kept[0]).toBe(key(100));
    expect(fitted.foldedWatermarks).toBe(30_000 - kept.length);
    expect(fitted.checkpoint!.floor).toBe(T0 + 30_099);
    expect(Object.keys(fitted.checkpoint!.watermarks)).toHaveLength(100);
  });

  it('gives up rather than leave out a watermark the replay needs', () => {
    const plan: CheckpointPlan = { ackSeq: 1, floor: T0, required: entries(0, 100), optional: [] };
    expect(fitCheckpoint(plan, [], 4 * 1024).checkpoint).toBeUndefined();
  });

  it('leaves out firing alerts before required watermarks, and other watermarks before alerts', () => {
    const plan: CheckpointPlan = {
      ackSeq: 1,
      floor: T0,
      required: entries(0, 20),
      optional: entries(20, 20),
    };
    const fitted = fitCheckpoint(
      plan,
      Array.from({ length: 40 }, (_, i) => alert(i)),
      4 * 1024,
    );
    expect(Object.keys(fitted.checkpoint!.watermarks)).toHaveLength(20);
    expect(fitted.checkpoint!.freed).toBeUndefined();
    expect(fitted.foldedWatermarks).toBe(20);
    expect(fitted.alertsLeftOut).toBeGreaterThan(0);
    expect(fitted.checkpoint!.firing!.length).toBe(40 - fitted.alertsLeftOut);
  });

  it('never takes more than it is given, and its floor is never below a watermark it left out', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ maxLength: 97 }), fc.integer()), { maxLength: 60 }),
        fc.array(fc.tuple(fc.string({ maxLength: 97 }), fc.integer()), { maxLength: 60 }),
        fc.nat({ max: 20 }),
        fc.integer({ min: 128, max: 8 * 1024 }),
        (required, optional, alerts, max) => {
          const plan: CheckpointPlan = { ackSeq: 3, floor: Number.NEGATIVE_INFINITY, required, optional };
          const fitted = fitCheckpoint(
            plan,
            Array.from({ length: alerts }, (_, i) => alert(i)),
            max,
          );
          if (fitted.checkpoint === undefined) return;
          expect(bytes(fitted.checkpoint)).toBeLessThanOrEqual(max);
          const kept = fitted.checkpoint.freed ?? {};
          for (const [k, w] of optional) {
            if (!Object.hasOwn(kept, k)) expect(fitted.checkpoint.floor).toBeGreaterThanOrEqual(w);
          }
        },
      ),
    );
  });
});
