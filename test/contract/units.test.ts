import { describe, expect, it } from 'vitest';
import { QUANTITIES, quantityOfMetric, toCanonical } from '../../contract/units.js';

describe('toCanonical', () => {
  it.each([
    ['temperature', 70.1, 'degF', 21.166_666_666_666_664, 'degC'],
    ['temperature', 212, '°F', 100, 'degC'],
    ['temperature', 32, 'F', 0, 'degC'],
    ['temperature', 300, 'K', 26.850_000_000_000_02, 'degC'],
    ['temperature', 21.5, 'C', 21.5, 'degC'],
    ['pressure', 101.325, 'kPa', 1013.25, 'hPa'],
    ['pressure', 14.7, 'psi', 1013.529_322_100_4, 'hPa'],
    ['pressure', 100_000, 'Pa', 1000, 'hPa'],
    ['voltage', 3300, 'mV', 3.3, 'V'],
    ['battery', 0.5, 'ratio', 50, '%'],
    ['vibration', 1, 'g', 9.806_65, 'm/s2'],
  ])('%s %d %s → %d %s', (metric, value, unit, expected, canonical) => {
    const result = toCanonical(metric, value, unit);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value).toBeCloseTo(expected, 9);
    expect(result.unit).toBe(canonical);
  });

  it('refuses a unit it does not know', () => {
    expect(toCanonical('temperature', 1, 'furlongs')).toMatchObject({ ok: false, reason: 'UNIT_UNKNOWN' });
  });

  it('refuses a unit of another quantity than the metric name says', () => {
    expect(toCanonical('temperature', 14.7, 'psi')).toMatchObject({ ok: false, reason: 'UNIT_MISMATCH' });
    expect(toCanonical('boiler.temperature', 14.7, 'psi')).toMatchObject({
      ok: false,
      reason: 'UNIT_MISMATCH',
    });
  });

  it('lets a metric with no known quantity take any known unit', () => {
    expect(toCanonical('inlet', 2, 'bar')).toMatchObject({ ok: true, value: 2000, unit: 'hPa' });
  });

  it('leaves canonical values bit-for-bit unchanged', () => {
    expect(toCanonical('temperature', 0.1 + 0.2, 'degC')).toMatchObject({ value: 0.1 + 0.2 });
  });
});

describe('quantityOfMetric', () => {
  it('matches the name or its last dotted segment', () => {
    expect(quantityOfMetric('temperature')).toBe('temperature');
    expect(quantityOfMetric('motor.temperature')).toBe('temperature');
    expect(quantityOfMetric('temperature_max')).toBeUndefined();
    expect(quantityOfMetric('rssi')).toBeUndefined();
  });
});

describe('the units table', () => {
  it('declares each quantity with its canonical unit among its own aliases', () => {
    for (const [name, q] of Object.entries(QUANTITIES)) {
      const aliases = q.units.flatMap((u) => u.aliases as readonly string[]);
      expect(aliases, name).toContain(q.canonical);
    }
  });
});
