import { describe, expect, it } from 'vitest';
import type { CanonicalEvent } from '../../contract/index.js';
import { parseAlertRules } from '../../processors/alerts/alert-rules.js';
import { PartitionPipeline } from '../../processors/partition-pipeline.js';

const S = 1_000;
const T0 = Date.parse('2026-12-06T00:00:00.000Z');
const rules = parseAlertRules(
  `rules:
  - { name: hot, type: threshold, severity: critical, metric: temperature, op: ">", value: 80, clear: 75 }
  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }`,
  'yaml',
);
const windows = { sizesMs: [10 * S], allowedLatenessMs: 0, idleTimeoutMs: 60 * S };

const event = (i: number, tsMs: number, value: number): CanonicalEvent => ({
  id: `acme.d1.${i}`,
  tenant: 'acme',
  deviceId: 'd1',
  ts: new Date(tsMs).toISOString(),
  receivedAt: new Date(tsMs).toISOString(),
  schemaVersion: 1,
  metrics: { temperature: { value, unit: 'degC' } },
  labels: {},
});

/** Feeds the readings at their own times, then takes everything due at `endMs`. */
function run(values: number[], endMs: number) {
  const pipeline = new PartitionPipeline({ windows, rules }, undefined, T0);
  for (const [i, v] of values.entries()) pipeline.add(event(i, T0 + i * S, v), i + 1, T0 + i * S);
  return { pipeline, batch: pipeline.take(endMs, false) };
}

describe('PartitionPipeline', () => {
  it('turns events into raw lines, window results, alert transitions and their lines, on the clock it is given', () => {
    const { batch } = run([20, 85, 90, 70, 21, 22, 23, 24, 25, 26, 27, 28], T0 + 12 * S);
    expect(batch.events).toBe(12);
    expect(batch.raw).toHaveLength(12);
    expect(batch.raw[0]).toBe(`telemetry,device=d1,tenant=acme temperature=20 ${T0}`);
    expect(batch.windows.map((w) => [w.startMs - T0, w.values.count, w.final])).toEqual([[0, 10, true]]);
    expect(batch.alerts.map((t) => [t.rule, t.state, t.atMs - T0])).toEqual([
      ['hot', 'firing', 1 * S],
      ['hot', 'resolved', 3 * S],
    ]);
    // One aggregate line per window result, one alert line per transition.
    expect(batch.derived).toHaveLength(3);
    expect(batch.derived.filter((l) => l.startsWith('alerts,'))).toHaveLength(2);
  });

  it('is deterministic: the same events at the same times give the same batch', () => {
    const values = [20, 85, 90, 70, 21, 22];
    expect(run(values, T0 + 40 * S).batch).toEqual(run(values, T0 + 40 * S).batch);
  });

  it('fires an absence only when its clock has moved past it, whatever the wall time', () => {
    const { pipeline, batch } = run([20], T0 + 29 * S);
    expect(batch.alerts).toEqual([]);
    expect(pipeline.take(T0 + 30 * S, true).alerts).toEqual([]); // a partial take visits no quiet device
    expect(pipeline.take(T0 + 30 * S, false).alerts.map((t) => [t.rule, t.atMs - T0])).toEqual([
      ['silent', 30 * S],
    ]);
  });

  it('restores the alerts firing from its checkpoint, so the next owner resolves rather than fires them', () => {
    const { pipeline } = run([90], T0);
    const saved = pipeline.checkpoint().checkpoint!;
    expect(saved.firing?.map((a) => a.rule)).toEqual(['hot']);
    const next = new PartitionPipeline({ windows, rules }, saved, T0 + S);
    next.add(event(1, T0 + S, 95), 2, T0 + S);
    next.add(event(2, T0 + 2 * S, 20), 3, T0 + 2 * S);
    expect(next.take(T0 + 2 * S, true).alerts.map((t) => [t.rule, t.state])).toEqual([['hot', 'resolved']]);
  });
});
