import { describe, expect, it } from 'vitest';
import { createSignalModel, DEVICE_METRICS, DEVICE_TYPES, Rng } from '../../simulators/signals.js';

const sampleSeries = (type: (typeof DEVICE_TYPES)[number], seed: number, n: number, stepS = 1) => {
  const model = createSignalModel(type, new Rng(seed, 'signal', 0), 12 * 3600);
  return Array.from({ length: n }, (_, i) => model.sample(i * stepS));
};

const decimals = (v: number) => (String(v).split('.')[1] ?? '').length;

describe('Rng', () => {
  it('repeats a stream exactly for the same seed and path, and differs otherwise', () => {
    const take = (r: Rng) => Array.from({ length: 20 }, () => r.float());
    expect(take(new Rng(42, 'signal', 3))).toEqual(take(new Rng(42, 'signal', 3)));
    expect(take(new Rng(42, 'signal', 3))).not.toEqual(take(new Rng(42, 'signal', 4)));
    expect(take(new Rng(42, 'signal', 3))).not.toEqual(take(new Rng(43, 'signal', 3)));
  });

  it('stays in its ranges', () => {
    const r = new Rng(7);
    for (let i = 0; i < 10_000; i++) {
      const f = r.float();
      expect(f >= 0 && f < 1).toBe(true);
      const n = r.int(3, 5);
      expect([3, 4, 5]).toContain(n);
    }
    expect(Array.from({ length: 1000 }, () => r.percent(0)).some(Boolean)).toBe(false);
    expect(Array.from({ length: 1000 }, () => r.percent(100)).every(Boolean)).toBe(true);
    const hits = Array.from({ length: 20_000 }, () => r.percent(25)).filter(Boolean).length;
    expect(hits / 20_000).toBeCloseTo(0.25, 1);
  });

  it('draws normal deviates with the asked mean and spread', () => {
    const r = new Rng(1);
    const xs = Array.from({ length: 20_000 }, () => r.normal(10, 2));
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1));
    expect(mean).toBeCloseTo(10, 1);
    expect(sd).toBeCloseTo(2, 1);
  });
});

describe('signal models', () => {
  it.each(DEVICE_TYPES)('%s: the same seed gives the same values, another seed others', (type) => {
    expect(sampleSeries(type, 5, 500)).toEqual(sampleSeries(type, 5, 500));
    expect(sampleSeries(type, 5, 500)).not.toEqual(sampleSeries(type, 6, 500));
  });

  it.each(DEVICE_TYPES)('%s: returns its metrics, with short decimals', (type) => {
    for (const values of sampleSeries(type, 9, 200)) {
      expect(Object.keys(values)).toEqual(DEVICE_METRICS[type]);
      for (const v of Object.values(values)) {
        expect(Number.isFinite(v)).toBe(true);
        expect(decimals(v)).toBeLessThanOrEqual(3);
      }
    }
  });

  it('keeps physical quantities in plausible ranges over a simulated day', () => {
    for (let seed = 0; seed < 20; seed++) {
      for (const type of DEVICE_TYPES) {
        for (const v of sampleSeries(type, seed, 1_440, 60)) {
          if (v.temperature !== undefined) expect(v.temperature).toBeGreaterThan(-10);
          if (v.temperature !== undefined) expect(v.temperature).toBeLessThan(60);
          if (v.humidity !== undefined) expect(v.humidity >= 5 && v.humidity <= 100).toBe(true);
          if (v.pressure !== undefined) expect(v.pressure > 960 && v.pressure < 1060).toBe(true);
          if (v.battery !== undefined) expect(v.battery >= 0 && v.battery <= 100).toBe(true);
          if (v.vibration !== undefined) expect(v.vibration).toBeGreaterThanOrEqual(0);
          if (v.power !== undefined) expect(v.power).toBeGreaterThanOrEqual(0);
        }
      }
    }
  });

  it('follows a daily temperature cycle: warmer mid-afternoon than before dawn', () => {
    let warmer = 0;
    for (let seed = 0; seed < 20; seed++) {
      // Starting at midnight: 15:00 is sample 900 (one a minute), 04:00 is sample 240.
      const model = createSignalModel('environment', new Rng(seed, 'signal', 0), 0);
      const series = Array.from({ length: 1_440 }, (_, i) => model.sample(i * 60));
      if (series[900]!.temperature! > series[240]!.temperature!) warmer++;
    }
    expect(warmer).toBeGreaterThanOrEqual(18);
  });

  it('decays batteries and grows counters, never the other way', () => {
    for (const type of ['thermometer', 'meter'] as const) {
      const series = sampleSeries(type, 3, 2_000);
      for (let i = 1; i < series.length; i++) {
        const [a, b] = [series[i - 1]!, series[i]!];
        if (a.battery !== undefined) expect(b.battery!).toBeLessThanOrEqual(a.battery);
        if (a.energy !== undefined) expect(b.energy!).toBeGreaterThanOrEqual(a.energy);
        if (a.events !== undefined) expect(b.events!).toBeGreaterThanOrEqual(a.events);
      }
      if (type === 'thermometer') expect(series.at(-1)!.battery!).toBeLessThan(series[0]!.battery!);
      else expect(series.at(-1)!.energy!).toBeGreaterThan(series[0]!.energy!);
    }
  });

  it('puts spikes into vibration', () => {
    const series = sampleSeries('vibration', 11, 5_000).map((v) => v.vibration!);
    const spikes = series.filter((v) => v > 2.5).length;
    expect(spikes).toBeGreaterThan(10);
    expect(spikes).toBeLessThan(500);
  });
});
