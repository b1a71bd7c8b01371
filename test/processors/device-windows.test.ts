import { describe, expect, it } from 'vitest';
import { DeviceWindows, type WindowSettings } from '../../processors/windows/device-windows.js';

const S = 1_000;
const settings: WindowSettings = {
  sizesMs: [10 * S, 60 * S],
  allowedLatenessMs: 5 * S,
  idleTimeoutMs: 30 * S,
};
const T0 = 1_800_000_000_000; // aligned to the minute
let nextId = 0;
const reading = (tsMs: number, temperature: number) => ({
  id: `r${nextId++}`,
  tsMs,
  metrics: { temperature: { value: temperature } },
});

function feed(w: DeviceWindows, ...readings: [number, number][]) {
  let seq = 0;
  return readings.map(([offset, value]) => w.add(reading(T0 + offset, value), ++seq, T0 + offset));
}

const tenSecond = (results: ReturnType<DeviceWindows['collect']>) =>
  results.filter((r) => r.windowMs === 10 * S);

describe('DeviceWindows', () => {
  it('emits a window once the device’s event time reaches its end, and not before', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    feed(w, [1 * S, 10], [5 * S, 20]);
    expect(w.collect(T0 + 5 * S)).toEqual([]);
    feed(w, [10 * S, 30]);
    const [first] = tenSecond(w.collect(T0 + 10 * S));
    expect(first).toMatchObject({ startMs: T0, windowMs: 10 * S, metric: 'temperature', final: false });
    expect(first!.values).toMatchObject({ count: 2, sum: 30, min: 10, max: 20, mean: 15, last: 20 });
  });

  it('re-emits a corrected window for a late reading inside the allowed lateness', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    feed(w, [1 * S, 10], [11 * S, 99]);
    expect(tenSecond(w.collect(T0 + 11 * S))[0]!.values.count).toBe(1);
    // 4 s late for the first window: the watermark (11 s − 5 s) has not passed its end (10 s).
    const [outcome] = feed(w, [7 * S, 30]);
    expect(outcome).toEqual({ lateFor: [], duplicate: false, metricsRefused: 0 });
    const corrected = tenSecond(w.collect(T0 + 12 * S)).find((r) => r.startMs === T0);
    expect(corrected!.values).toMatchObject({ count: 2, sum: 40, max: 30, last: 30 });
  });

  it('counts a reading beyond the lateness as late and leaves the final window alone', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    feed(w, [1 * S, 10], [16 * S, 20]); // watermark 11 s: the first 10 s window is final
    const results = tenSecond(w.collect(T0 + 16 * S));
    expect(results.find((r) => r.startMs === T0)).toMatchObject({ final: true, values: { count: 1 } });
    const [late] = feed(w, [2 * S, 500]);
    expect(late!.lateFor).toEqual([10 * S]); // still inside the open 1 m window
    expect(tenSecond(w.collect(T0 + 17 * S)).find((r) => r.startMs === T0)).toBeUndefined();
    expect(w.add(reading(T0 + 66 * S, 0), 9, T0 + 66 * S).lateFor).toEqual([]);
    const oneMinute = w.collect(T0 + 66 * S).find((r) => r.windowMs === 60 * S && r.startMs === T0);
    expect(oneMinute!.values).toMatchObject({ count: 3, max: 500 });
    expect(oneMinute!.final).toBe(true);
  });

  it('drops a redelivered reading with the same id', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    const r = reading(T0 + S, 5);
    w.add(r, 1, T0);
    expect(w.add(r, 2, T0).duplicate).toBe(true);
    w.add(reading(T0 + 10 * S, 1), 3, T0 + 10 * S);
    expect(tenSecond(w.collect(T0 + 10 * S))[0]!.values.count).toBe(1);
  });

  it('finalizes a quiet device’s windows after the idle timeout, by wall time', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    w.add(reading(T0 + 3 * S, 7), 1, T0 + 3 * S);
    expect(w.collect(T0 + 20 * S)).toEqual([]); // quiet for 17 s: not yet idle
    const results = w.collect(T0 + 3 * S + 30 * S);
    expect(results.map((r) => [r.windowMs, r.final])).toEqual([[10 * S, true]]);
    expect(w.firstOpenSeq).toBe(1); // the 1 m window still waits
    const later = w.collect(T0 + 3 * S + 30 * S + 40 * S);
    expect(later.map((r) => [r.windowMs, r.final])).toEqual([[60 * S, true]]);
    expect(w.isIdle).toBe(true);
    expect(w.add(reading(T0 + 4 * S, 1), 2, T0 + 80 * S).lateFor).toEqual([10 * S, 60 * S]);
  });

  it('reports the first stream sequence an open window still needs', () => {
    const w = new DeviceWindows('acme', 'd1', settings);
    expect(w.firstOpenSeq).toBeUndefined();
    w.add(reading(T0 + S, 1), 41, T0);
    w.add(reading(T0 + 2 * S, 1), 42, T0);
    expect(w.firstOpenSeq).toBe(41);
  });

  it('aggregates at most WINDOW_MAX_METRICS metrics per window, the first to arrive, and counts the rest', () => {
    const w = new DeviceWindows('acme', 'd1', { ...settings, maxMetrics: 2 });
    const many = (tsMs: number, names: string[]) => ({
      id: `m${nextId++}`,
      tsMs,
      metrics: Object.fromEntries(names.map((n) => [n, { value: 1 }])),
    });
    expect(w.add(many(T0 + S, ['a', 'b', 'c']), 1, T0 + S).metricsRefused).toBe(1);
    expect(w.add(many(T0 + 2 * S, ['c', 'a']), 2, T0 + 2 * S).metricsRefused).toBe(1);
    // A new 10 s window takes the first two it sees; the minute, full already, still refuses `c`.
    expect(w.add(many(T0 + 11 * S, ['c']), 3, T0 + 11 * S).metricsRefused).toBe(1);
    const results = w.collect(T0 + 200 * S);
    const held = (size: number, start: number) =>
      results
        .filter((r) => r.windowMs === size && r.startMs === start)
        .map((r) => `${r.metric}:${r.values.count}`)
        .sort();
    expect(held(10 * S, T0)).toEqual(['a:2', 'b:1']);
    expect(held(10 * S, T0 + 10 * S)).toEqual(['c:1']);
    expect(held(60 * S, T0)).toEqual(['a:2', 'b:1']);
  });

  it('keeps each metric apart however many a window holds, in order of arrival', () => {
    const w = new DeviceWindows('acme', 'd1', { ...settings, maxMetrics: 20 });
    const names = Array.from({ length: 24 }, (_, i) => `m${i}`);
    // Each reading has every metric, in a different order, with a value that says which it is.
    for (let r = 0; r < 4; r++) {
      const order = r % 2 === 0 ? names : [...names].reverse();
      const metrics = Object.fromEntries(order.map((n) => [n, { value: Number(n.slice(1)) * 10 + r }]));
      expect(w.add({ id: `x${nextId++}`, tsMs: T0 + r * S, metrics }, r + 1, T0 + r * S).metricsRefused).toBe(
        4,
      );
    }
    const results = tenSecond(w.collect(T0 + 200 * S));
    expect(results.map((x) => x.metric)).toEqual(names.slice(0, 20));
    for (const x of results) {
      const k = Number(x.metric.slice(1));
      expect(x.values).toMatchObject({ count: 4, min: k * 10, max: k * 10 + 3, sum: 4 * k * 10 + 6 });
    }
  });
});
