import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type AlertTransition, type CanonicalEvent, decodeCanonicalEvent } from '../../contract/index.js';
import { AlertEngine } from '../../processors/alerts/alert-engine.js';
import { parseAlertRules } from '../../processors/alerts/alert-rules.js';

const S = 1_000;
const T0 = 1_800_000_000_000;
let nextId = 0;

interface EventOptions {
  tenant?: string;
  deviceId?: string;
  labels?: Record<string, string>;
}

/** A canonical event at T0 + offsetMs; receivedAt is the same instant. */
function event(offsetMs: number, metrics: Record<string, number>, o: EventOptions = {}): CanonicalEvent {
  const iso = new Date(T0 + offsetMs).toISOString();
  return {
    id: `e${nextId++}`,
    tenant: o.tenant ?? 'acme',
    deviceId: o.deviceId ?? 'd1',
    ts: iso,
    receivedAt: iso,
    schemaVersion: 1,
    metrics: Object.fromEntries(Object.entries(metrics).map(([k, value]) => [k, { value, unit: 'u' }])),
    labels: o.labels ?? { type: 'thermometer' },
  };
}

afterEach(() => {
  vi.useRealTimers();
});

const engineFor = (yaml: string) => new AlertEngine(parseAlertRules(`rules:\n${yaml}`, 'yaml'));

/** [state, rule, atMs − T0, value] of each transition, in order. */
const brief = (ts: readonly AlertTransition[]) => ts.map((t) => [t.state, t.rule, t.atMs - T0, t.value]);

/** Feeds readings of one metric, wall clock = event time, and collects every transition. */
function feed(
  engine: AlertEngine,
  metric: string,
  readings: [offsetMs: number, value: number][],
  o?: EventOptions,
) {
  return readings.flatMap(([offset, value]) =>
    engine.onEvent(event(offset, { [metric]: value }, o), T0 + offset),
  );
}

const HOT = `
  - name: hot
    type: threshold
    severity: critical
    metric: temperature
    op: '>'
    value: 80
`;

describe('threshold', () => {
  it('fires on the first breaching reading, does not fire again while firing, resolves once back', () => {
    const engine = engineFor(HOT);
    expect(feed(engine, 'temperature', [[0, 70]])).toEqual([]);
    const fired = feed(engine, 'temperature', [[1 * S, 85]]);
    expect(fired).toEqual([
      {
        tenant: 'acme',
        deviceId: 'd1',
        rule: 'hot',
        severity: 'critical',
        state: 'firing',
        value: 85,
        atMs: T0 + 1 * S,
        message: 'temperature 85 > 80',
      },
    ]);
    expect(engine.active()).toEqual(fired);
    expect(
      feed(engine, 'temperature', [
        [2 * S, 90],
        [3 * S, 81],
      ]),
    ).toEqual([]);
    const resolved = feed(engine, 'temperature', [[4 * S, 80]]);
    expect(brief(resolved)).toEqual([['resolved', 'hot', 4 * S, 80]]);
    expect(resolved[0]!.message).toBe('temperature 80 ≤ 80');
    expect(engine.active()).toEqual([]);
    expect(brief(feed(engine, 'temperature', [[5 * S, 81]]))).toEqual([['firing', 'hot', 5 * S, 81]]);
  });

  it('honours the other operators, including equality at the threshold', () => {
    const engine = engineFor(`
  - { name: cold, type: threshold, severity: warning, metric: temperature, op: '<', value: 0 }
  - { name: at-least, type: threshold, severity: info, metric: temperature, op: '>=', value: 10 }
  - { name: at-most, type: threshold, severity: info, metric: temperature, op: '<=', value: 0 }
`);
    expect(
      brief(
        feed(engine, 'temperature', [
          [0, 0],
          [1 * S, 10],
          [2 * S, -1],
          [3 * S, 0.5],
        ]),
      ),
    ).toEqual([
      ['firing', 'at-most', 0, 0],
      ['firing', 'at-least', 1 * S, 10],
      ['resolved', 'at-most', 1 * S, 10],
      ['firing', 'cold', 2 * S, -1],
      ['resolved', 'at-least', 2 * S, -1],
      ['firing', 'at-most', 2 * S, -1],
      ['resolved', 'cold', 3 * S, 0.5],
      ['resolved', 'at-most', 3 * S, 0.5],
    ]);
  });

  describe('for', () => {
    const HOT_FOR_30S = `${HOT}    for: 30s\n`;

    it('fires on a reading once the breach has held for the duration, at the moment it came due', () => {
      const engine = engineFor(HOT_FOR_30S);
      expect(
        feed(engine, 'temperature', [
          [0, 85],
          [10 * S, 90],
          [20 * S, 81],
        ]),
      ).toEqual([]);
      const fired = feed(engine, 'temperature', [[30 * S, 82]]);
      expect(brief(fired)).toEqual([['firing', 'hot', 30 * S, 82]]);
      expect(fired[0]!.message).toBe('temperature 82 > 80 for 30s');
    });

    it('starts over when the breach lapses before the duration', () => {
      const engine = engineFor(HOT_FOR_30S);
      expect(
        feed(engine, 'temperature', [
          [0, 85],
          [20 * S, 79],
          [25 * S, 85],
          [50 * S, 85],
        ]),
      ).toEqual([]);
      expect(engine.tick(T0 + 54_999)).toEqual([]);
      expect(brief(feed(engine, 'temperature', [[55 * S, 85]]))).toEqual([['firing', 'hot', 55 * S, 85]]);
    });

    it('fires through tick when the device stays silent, with the last value held', () => {
      const engine = engineFor(HOT_FOR_30S);
      feed(engine, 'temperature', [
        [0, 85],
        [5 * S, 86],
      ]);
      expect(engine.tick(T0 + 30 * S - 1)).toEqual([]);
      expect(brief(engine.tick(T0 + 30 * S))).toEqual([['firing', 'hot', 30 * S, 86]]);
      expect(engine.tick(T0 + 60 * S)).toEqual([]);
      expect(feed(engine, 'temperature', [[61 * S, 99]])).toEqual([]);
    });

    it('reveals a due firing and its end in one event when no tick ran in between', () => {
      const engine = engineFor(HOT_FOR_30S);
      feed(engine, 'temperature', [
        [0, 85],
        [20 * S, 86],
      ]);
      // The value was 86 from 20 s to 45 s, so the condition held for 30 s at 30 s.
      expect(brief(feed(engine, 'temperature', [[45 * S, 70]]))).toEqual([
        ['firing', 'hot', 30 * S, 86],
        ['resolved', 'hot', 45 * S, 70],
      ]);
    });

    it('does not fire when the reading at exactly the due time ends the breach', () => {
      const engine = engineFor(HOT_FOR_30S);
      expect(
        feed(engine, 'temperature', [
          [0, 85],
          [30 * S, 80],
        ]),
      ).toEqual([]);
    });

    it('measures the duration in event time: a replayed backlog fires as live data did', () => {
      const engine = engineFor(HOT_FOR_30S);
      // Forty readings handled within one wall-clock millisecond.
      const out = Array.from({ length: 40 }, (_, i) =>
        engine.onEvent(event(i * S, { temperature: i < 35 ? 90 : 50 }), T0 + 999 * S),
      ).flat();
      expect(brief(out)).toEqual([
        ['firing', 'hot', 30 * S, 90],
        ['resolved', 'hot', 35 * S, 50],
      ]);
    });
  });

  describe('hysteresis', () => {
    const HOT_CLEAR_75 = `${HOT}    clear: 75\n`;

    it('does not flap while the value oscillates between clear and the threshold', () => {
      const engine = engineFor(HOT_CLEAR_75);
      const values = [81, 78, 80.5, 76, 79.9, 75.01, 82, 77];
      const out = feed(
        engine,
        'temperature',
        values.map((v, i) => [i * S, v]),
      );
      expect(brief(out)).toEqual([['firing', 'hot', 0, 81]]);
      const resolved = feed(engine, 'temperature', [[10 * S, 75]]);
      expect(brief(resolved)).toEqual([['resolved', 'hot', 10 * S, 75]]);
      expect(resolved[0]!.message).toBe('temperature 75 ≤ 75');
      // Back in the band after resolving: below the threshold, so no firing either.
      expect(
        feed(engine, 'temperature', [
          [11 * S, 79],
          [12 * S, 80],
        ]),
      ).toEqual([]);
      expect(brief(feed(engine, 'temperature', [[13 * S, 80.1]]))).toEqual([['firing', 'hot', 13 * S, 80.1]]);
    });

    it('applies on the low side too', () => {
      const engine = engineFor(`
  - { name: cold, type: threshold, severity: warning, metric: temperature, op: '<', value: 0, clear: 2 }
`);
      const out = feed(engine, 'temperature', [
        [0, -1],
        [1 * S, 1],
        [2 * S, 0],
        [3 * S, 1.9],
        [4 * S, 2],
      ]);
      expect(brief(out)).toEqual([
        ['firing', 'cold', 0, -1],
        ['resolved', 'cold', 4 * S, 2],
      ]);
    });
  });
});

describe('rate_of_change', () => {
  it('compares the change per second between consecutive readings, optionally its magnitude', () => {
    const engine = engineFor(`
  - { name: rising, type: rate_of_change, severity: warning, metric: temperature, op: '>', value: 2, clear: 1 }
  - { name: moving, type: rate_of_change, severity: info, metric: temperature, abs: true, op: '>', value: 2 }
`);
    const out = feed(engine, 'temperature', [
      [0, 20],
      [1 * S, 21], // +1/s
      [2 * S, 24], // +3/s: both fire
      [4 * S, 29], // +2.5/s: still firing, no repeat
      [6 * S, 32], // +1.5/s: moving resolves (≤ 2), rising holds (> clear 1)
      [7 * S, 33], // +1/s: rising resolves (≤ 1)
      [7_500, 30], // −6/s: only |rate| fires
    ]);
    expect(brief(out)).toEqual([
      ['firing', 'rising', 2 * S, 3],
      ['firing', 'moving', 2 * S, 3],
      ['resolved', 'moving', 6 * S, 1.5],
      ['resolved', 'rising', 7 * S, 1],
      ['firing', 'moving', 7_500, 6],
    ]);
    expect(out[0]!.message).toBe('temperature rate 3/s > 2');
    expect(out[4]!.message).toBe('|temperature rate| 6/s > 2');
  });

  it('over a window, compares with the reading at least the window earlier', () => {
    const engine = engineFor(`
  - { name: step, type: rate_of_change, severity: warning, metric: level, op: '>', value: 1.5, window: 10s }
`);
    // A step from 0 to 20 at 15 s: 20 / 10 s = 2/s for as long as the base is before the step.
    const readings: [number, number][] = Array.from({ length: 31 }, (_, i) => [i * S, i < 15 ? 0 : 20]);
    const out = feed(engine, 'level', readings);
    expect(brief(out)).toEqual([
      ['firing', 'step', 15 * S, 2],
      ['resolved', 'step', 25 * S, 0],
    ]);
    expect(out[0]!.message).toBe('level rate 2/s over 10s > 1.5');
  });

  it('needs a full window of history before it judges', () => {
    const engine = engineFor(`
  - { name: step, type: rate_of_change, severity: warning, metric: level, op: '>', value: 1, window: 10s }
`);
    expect(
      feed(engine, 'level', [
        [0, 0],
        [1 * S, 500],
        [9 * S, 900],
      ]),
    ).toEqual([]);
    expect(brief(feed(engine, 'level', [[10 * S, 900]]))).toEqual([['firing', 'step', 10 * S, 90]]);
  });

  it('keeps judging correctly with many readings per window (its memory is thinned)', () => {
    const engine = engineFor(`
  - { name: ramp, type: rate_of_change, severity: warning, metric: level, op: '>', value: 1.5, window: 10s }
`);
    // 100 readings a second at 1/s, then at 2/s from 60 s on.
    const readings: [number, number][] = [];
    for (let t = 0; t <= 90 * S; t += 10)
      readings.push([t, t <= 60 * S ? t / S : 60 + (2 * (t - 60 * S)) / S]);
    const out = feed(engine, 'level', readings);
    expect(out.map((t) => t.state)).toEqual(['firing']);
    // The rate over ≥ 10 s passes 1.5/s once more than half of the window is at the new slope.
    expect(out[0]!.atMs - T0).toBeGreaterThan(65 * S);
    expect(out[0]!.atMs - T0).toBeLessThan(66 * S);
  });
});

describe('absence', () => {
  const SILENT = `
  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }
`;

  it('fires through tick once the metric has been silent for the duration, resolves on its next reading', () => {
    const engine = engineFor(SILENT);
    expect(feed(engine, 'temperature', [[0, 20]])).toEqual([]);
    expect(engine.tick(T0 + 30 * S - 1)).toEqual([]);
    const fired = engine.tick(T0 + 30 * S);
    expect(fired).toEqual([
      {
        tenant: 'acme',
        deviceId: 'd1',
        rule: 'silent',
        severity: 'warning',
        state: 'firing',
        value: 30,
        atMs: T0 + 30 * S,
        message: 'no temperature reading for 30s',
      },
    ]);
    expect(engine.tick(T0 + 40 * S)).toEqual([]);
    expect(engine.active()).toEqual(fired);
    const resolved = feed(engine, 'temperature', [[45 * S, 21]]);
    expect(brief(resolved)).toEqual([['resolved', 'silent', 45 * S, 45]]);
    expect(resolved[0]!.message).toBe('temperature reported again after 45s');
    expect(brief(engine.tick(T0 + 75 * S))).toEqual([['firing', 'silent', 75 * S, 30]]);
  });

  it('fires on wall time with vitest fake timers driving the tick loop', () => {
    vi.useFakeTimers({ now: T0 });
    const engine = engineFor(SILENT);
    const out: AlertTransition[] = [];
    engine.onEvent(event(0, { temperature: 20 }), Date.now());
    const loop = setInterval(() => out.push(...engine.tick(Date.now())), 1_000);
    vi.advanceTimersByTime(29 * S);
    expect(out).toEqual([]);
    vi.advanceTimersByTime(1 * S);
    expect(brief(out)).toEqual([['firing', 'silent', 30 * S, 30]]);
    vi.advanceTimersByTime(60 * S);
    expect(out).toHaveLength(1);
    clearInterval(loop);
  });

  it('does nothing for a device that never reported the metric', () => {
    const engine = engineFor(SILENT);
    feed(engine, 'humidity', [[0, 50]]);
    expect(engine.tick(T0 + 3_600 * S)).toEqual([]);
    expect(engine.deviceCount).toBe(0);
  });

  it('notices one silent metric among others the device still sends, from the events alone', () => {
    const engine = engineFor(SILENT);
    engine.onEvent(event(0, { temperature: 20, humidity: 50 }), T0);
    expect(engine.onEvent(event(20 * S, { humidity: 51 }), T0 + 20 * S)).toEqual([]);
    expect(brief(engine.onEvent(event(40 * S, { humidity: 52 }), T0 + 40 * S))).toEqual([
      ['firing', 'silent', 30 * S, 30],
    ]);
  });

  it('reports a gap found after the fact (no tick in between) as firing and resolved together', () => {
    const engine = engineFor(SILENT);
    expect(
      brief(
        feed(engine, 'temperature', [
          [0, 20],
          [50 * S, 21],
        ]),
      ),
    ).toEqual([
      ['firing', 'silent', 30 * S, 30],
      ['resolved', 'silent', 50 * S, 50],
    ]);
  });

  it('is measured from when the latest event was handled, so a lagging pipeline is not a silent device', () => {
    const engine = engineFor(SILENT);
    // Arrives 20 s after its event time: 30 s of silence end at wall T0 + 50 s.
    engine.onEvent(event(0, { temperature: 20 }), T0 + 20 * S);
    expect(engine.tick(T0 + 49 * S)).toEqual([]);
    expect(brief(engine.tick(T0 + 50 * S))).toEqual([['firing', 'silent', 30 * S, 30]]);
  });
});

describe('anomaly', () => {
  // A constant signal has no variance: min_stddev makes the z-scores exact and easy to read.
  const ODD = `
  - name: odd
    type: anomaly
    severity: info
    metric: pressure
    alpha: 0.1
    z: 3
    min_stddev: 1
    warmup: 20
`;
  const steady = (from: number, count: number, value = 20): [number, number][] =>
    Array.from({ length: count }, (_, i) => [(from + i) * S, value]);

  it('does not fire during warmup', () => {
    const engine = engineFor(ODD);
    expect(feed(engine, 'pressure', [...steady(0, 19), [19 * S, 100]])).toEqual([]);
  });

  it('fires on a spike after warmup and resolves below clear_z', () => {
    const engine = engineFor(ODD);
    expect(feed(engine, 'pressure', steady(0, 20))).toEqual([]);
    const fired = feed(engine, 'pressure', [[20 * S, 25]]);
    expect(brief(fired)).toEqual([['firing', 'odd', 20 * S, 5]]);
    expect(fired[0]!.message).toBe('pressure z-score 5, |z| ≥ 3');
    // Between clear_z (1.5, the default z / 2) and z: still firing.
    expect(
      feed(engine, 'pressure', [
        [21 * S, 22],
        [22 * S, 18.4],
      ]),
    ).toEqual([]);
    const resolved = feed(engine, 'pressure', [[23 * S, 21.4]]);
    expect(brief(resolved)).toEqual([['resolved', 'odd', 23 * S, expect.closeTo(1.4, 9)]]);
  });

  it('does not learn anomalous readings: after a long spike the baseline is what it was', () => {
    const engine = engineFor(ODD);
    feed(engine, 'pressure', steady(0, 20));
    // Fifty readings at 25 while firing; had they been learned, 23 would no longer be 3σ away.
    const spike = feed(engine, 'pressure', steady(20, 50, 25));
    expect(brief(spike)).toEqual([['firing', 'odd', 20 * S, 5]]);
    expect(brief(feed(engine, 'pressure', [[70 * S, 20]]))).toEqual([['resolved', 'odd', 70 * S, 0]]);
    expect(brief(feed(engine, 'pressure', [[71 * S, 23]]))).toEqual([['firing', 'odd', 71 * S, 3]]);
  });

  it('learns a noisy baseline and fires on a spike, either direction', () => {
    const engine = engineFor(`
  - { name: odd, type: anomaly, severity: info, metric: pressure, alpha: 0.1, z: 4 }
`);
    const noisy: [number, number][] = Array.from({ length: 40 }, (_, i) => [i * S, i % 2 === 0 ? 19 : 21]);
    expect(feed(engine, 'pressure', noisy)).toEqual([]);
    const up = feed(engine, 'pressure', [[40 * S, 30]]);
    expect(up.map((t) => t.state)).toEqual(['firing']);
    expect(up[0]!.value).toBeCloseTo(10, 0);
    expect(feed(engine, 'pressure', [[41 * S, 20]]).map((t) => t.state)).toEqual(['resolved']);
    const down = feed(engine, 'pressure', [[42 * S, 10]]);
    expect(down.map((t) => t.state)).toEqual(['firing']);
    expect(down[0]!.value).toBeCloseTo(-10.6, 0);
  });

  it('with relearn_after, takes a lasting level shift as the new baseline', () => {
    const engine = engineFor(`${ODD}    relearn_after: 1m\n`);
    feed(engine, 'pressure', steady(0, 20));
    const shifted = feed(engine, 'pressure', steady(20, 60, 30));
    expect(brief(shifted)).toEqual([['firing', 'odd', 20 * S, 10]]);
    const relearned = feed(engine, 'pressure', [[80 * S, 30]]);
    expect(brief(relearned)).toEqual([['resolved', 'odd', 80 * S, 10]]);
    expect(relearned[0]!.message).toBe('pressure baseline relearned after 1m firing');
    // Warms up again on the new level, which is then normal.
    expect(feed(engine, 'pressure', steady(81, 40, 30))).toEqual([]);
    expect(brief(feed(engine, 'pressure', [[121 * S, 35]]))).toEqual([['firing', 'odd', 121 * S, 5]]);
  });

  it('without relearn_after, a lasting level shift keeps firing, once', () => {
    const engine = engineFor(ODD);
    feed(engine, 'pressure', steady(0, 20));
    expect(brief(feed(engine, 'pressure', steady(20, 500, 30)))).toEqual([['firing', 'odd', 20 * S, 10]]);
    expect(engine.active()).toHaveLength(1);
  });
});

describe('selectors', () => {
  const RULES = `
  - { name: acme-hot, type: threshold, severity: critical, metric: temperature, op: '>', value: 80, tenant: acme }
  - name: thermo-hot
    type: threshold
    severity: warning
    metric: temperature
    op: '>'
    value: 80
    labels: { type: thermometer, site: lab }
`;

  it('applies a rule only to its tenant, to devices with all its labels, and to its metric', () => {
    const engine = new AlertEngine(parseAlertRules(`rules:\n${RULES}`, 'yaml'));
    const hot = (o: EventOptions, metric = 'temperature') =>
      engine.onEvent(event(0, { [metric]: 99 }, o), T0);
    expect(hot({ tenant: 'globex', deviceId: 'a', labels: { type: 'thermometer' } })).toEqual([]);
    expect(hot({ tenant: 'globex', deviceId: 'b', labels: { type: 'hygrometer', site: 'lab' } })).toEqual([]);
    expect(
      brief(hot({ tenant: 'globex', deviceId: 'c', labels: { type: 'thermometer', site: 'lab' } })),
    ).toEqual([['firing', 'thermo-hot', 0, 99]]);
    expect(brief(hot({ tenant: 'acme', deviceId: 'd', labels: {} }))).toEqual([
      ['firing', 'acme-hot', 0, 99],
    ]);
    expect(
      hot({ tenant: 'acme', deviceId: 'e', labels: { type: 'thermometer', site: 'lab' } }, 'humidity'),
    ).toEqual([]);
    expect(engine.deviceCount).toBe(2);
  });

  it('resolves and forgets when a relabelled device no longer matches', () => {
    const engine = new AlertEngine(parseAlertRules(`rules:\n${RULES}`, 'yaml'));
    const lab = { tenant: 'globex', labels: { type: 'thermometer', site: 'lab' } };
    feed(engine, 'temperature', [[0, 99]], lab);
    const moved = feed(engine, 'temperature', [[1 * S, 99]], { ...lab, labels: { type: 'thermometer' } });
    expect(brief(moved)).toEqual([['resolved', 'thermo-hot', 1 * S, 99]]);
    expect(moved[0]!.message).toBe('the device no longer matches the rule');
    expect(engine.active()).toEqual([]);
  });
});

describe('late and out-of-order readings', () => {
  it('ignores a reading not newer than the last one a rule took, redeliveries included', () => {
    const engine = engineFor(HOT);
    expect(brief(feed(engine, 'temperature', [[10 * S, 90]]))).toEqual([['firing', 'hot', 10 * S, 90]]);
    expect(
      feed(engine, 'temperature', [
        [5 * S, 20],
        [10 * S, 20],
      ]),
    ).toEqual([]);
    expect(engine.ignoredReadings).toBe(2);
    expect(engine.active()).toHaveLength(1);
    expect(brief(feed(engine, 'temperature', [[11 * S, 20]]))).toEqual([['resolved', 'hot', 11 * S, 20]]);
  });

  it('does not let a late event move a device’s clock back', () => {
    const engine = engineFor(`
  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }
`);
    engine.onEvent(event(0, { temperature: 20 }), T0);
    engine.onEvent(event(-100 * S, { humidity: 1 }), T0 + 20 * S);
    expect(brief(engine.tick(T0 + 30 * S))).toEqual([['firing', 'silent', 30 * S, 30]]);
  });

  it('never stamps a resolution before its firing', () => {
    const engine = engineFor(`
  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }
`);
    engine.onEvent(event(0, { temperature: 20 }), T0);
    expect(brief(engine.tick(T0 + 30 * S))).toEqual([['firing', 'silent', 30 * S, 30]]);
    // A reading from 25 s that was stuck in transit: newer than the last one, older than the alert.
    expect(brief(engine.onEvent(event(25 * S, { temperature: 20 }), T0 + 31 * S))).toEqual([
      ['resolved', 'silent', 30 * S, 25],
    ]);
  });
});

describe('engine state', () => {
  const TTL = 3_600 * S;
  const freeing = (yaml: string, maxForgotten?: number) => {
    const hits: string[] = [];
    const engine = new AlertEngine(parseAlertRules(`rules:\n${yaml}`, 'yaml'), {
      deviceStateTtlMs: TTL,
      ...(maxForgotten === undefined ? {} : { maxForgotten }),
      onLimit: (limit) => hits.push(limit),
    });
    return { engine, hits };
  };

  it('frees a device silent for DEVICE_STATE_TTL, keeping only its clock: older readings stay ignored', () => {
    const { engine } = freeing(`${HOT}    clear: 75\n`);
    feed(engine, 'temperature', [
      [0, 90],
      [10 * S, 20],
    ]); // fired and resolved
    engine.tick(T0 + 10 * S + TTL - 1);
    expect(engine.deviceCount).toBe(1);
    engine.tick(T0 + 10 * S + TTL);
    expect([engine.deviceCount, engine.forgottenCount]).toEqual([0, 1]);
    // A reading from before what the rule took would otherwise fire again, back in time.
    expect(feed(engine, 'temperature', [[5 * S, 95]])).toEqual([]);
    expect(engine.ignoredReadings).toBe(1);
    expect(brief(feed(engine, 'temperature', [[TTL + 20 * S, 95]]))).toEqual([
      ['firing', 'hot', TTL + 20 * S, 95],
    ]);
    expect(engine.forgottenCount).toBe(0);
  });

  it('keeps a silent device whose alert fires, or whose absence has not come due yet', () => {
    const { engine } = freeing(
      `${HOT}  - { name: gone, type: absence, severity: warning, metric: humidity, after: 2h }\n`,
    );
    feed(engine, 'temperature', [[0, 90]], { deviceId: 'hot' });
    feed(engine, 'humidity', [[0, 50]], { deviceId: 'quiet' });
    engine.tick(T0 + TTL + S);
    expect(engine.deviceCount).toBe(2);
    // The absence fires at 2 h; then `quiet` is kept for its firing alert, which its next reading resolves.
    expect(brief(engine.tick(T0 + 2 * TTL))).toEqual([['firing', 'gone', 2 * TTL, 7_200]]);
    engine.tick(T0 + 4 * TTL);
    expect(engine.deviceCount).toBe(2);
    expect(brief(feed(engine, 'humidity', [[4 * TTL, 51]], { deviceId: 'quiet' }))).toEqual([
      ['resolved', 'gone', 4 * TTL, 4 * 3_600],
    ]);
  });

  it('keeps at most maxForgotten clocks of freed devices, counting the ones it drops', () => {
    const { engine, hits } = freeing(HOT, 2);
    for (const d of ['a', 'b', 'c']) feed(engine, 'temperature', [[0, 20]], { deviceId: d });
    engine.tick(T0 + TTL);
    expect([engine.deviceCount, engine.forgottenCount]).toEqual([0, 2]);
    expect(hits).toEqual(['MAX_FREED_DEVICES']);
  });

  it('forgets every device of a partition it gives up, freed ones too', () => {
    const { engine } = freeing(HOT);
    feed(engine, 'temperature', [[0, 90]], { deviceId: 'a' });
    feed(engine, 'temperature', [[0, 20]], { deviceId: 'b' });
    engine.tick(T0 + TTL); // b is freed, a fires
    engine.forgetDevices((_, deviceId) => deviceId === 'a' || deviceId === 'b');
    expect([engine.deviceCount, engine.forgottenCount, engine.active().length]).toEqual([0, 0, 0]);
  });

  it('keeps devices apart and lists what fires across them', () => {
    const engine = engineFor(HOT);
    feed(engine, 'temperature', [[0, 90]], { deviceId: 'a' });
    feed(engine, 'temperature', [[0, 90]], { deviceId: 'b' });
    feed(engine, 'temperature', [[1 * S, 20]], { deviceId: 'a' });
    expect(engine.active().map((t) => t.deviceId)).toEqual(['b']);
  });

  it('forgets a device, handing back what was firing for it', () => {
    const engine = engineFor(HOT);
    feed(engine, 'temperature', [[0, 90]]);
    expect(brief(engine.forgetDevice('acme', 'd1'))).toEqual([['firing', 'hot', 0, 90]]);
    expect(engine.deviceCount).toBe(0);
    expect(engine.active()).toEqual([]);
    expect(engine.forgetDevice('acme', 'd1')).toEqual([]);
    expect(brief(feed(engine, 'temperature', [[1 * S, 90]]))).toEqual([['firing', 'hot', 1 * S, 90]]);
  });

  it('carries firing alerts to a new owner: later readings resolve them, none fires twice', () => {
    const rules = `${HOT}    clear: 75\n  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }
  - { name: odd, type: anomaly, severity: info, metric: pressure, alpha: 0.1, z: 3, min_stddev: 1, warmup: 5 }
`;
    const before = engineFor(rules);
    feed(before, 'temperature', [[0, 90]]);
    before.tick(T0 + 31 * S); // no temperature since 0 s: silent fires at 30 s
    feed(
      before,
      'pressure',
      Array.from({ length: 5 }, (_, i): [number, number] => [i * S, 20]),
    );
    feed(before, 'pressure', [[6 * S, 40]]); // anomaly fires
    const carried = before.active();
    expect(carried.map((t) => t.rule).sort()).toEqual(['hot', 'odd', 'silent']);

    const after = engineFor(rules);
    after.restoreFiring(carried, T0 + 40 * S);
    after.restoreFiring(carried, T0 + 40 * S); // twice: still one of each
    expect(after.active()).toHaveLength(3);
    // Replayed readings from before the firing change nothing.
    expect(feed(after, 'temperature', [[0, 90]])).toEqual([]);
    // Still hot: no second firing. Back below clear: hot resolves, and silent resolves on the reading.
    expect(brief(feed(after, 'temperature', [[41 * S, 95]]))).toEqual([['resolved', 'silent', 41 * S, 41]]);
    expect(brief(feed(after, 'temperature', [[42 * S, 70]]))).toEqual([['resolved', 'hot', 42 * S, 70]]);
    // The anomaly's baseline did not travel: its next reading resolves it, saying why.
    const odd = feed(after, 'pressure', [[43 * S, 20]]);
    expect(brief(odd)).toEqual([['resolved', 'odd', 43 * S, 0]]);
    expect(odd[0]!.message).toMatch(/baseline relearned/);
    expect(after.active()).toEqual([]);
  });

  it('skips carried alerts of rules that no longer exist', () => {
    const before = engineFor(HOT);
    feed(before, 'temperature', [[0, 90]]);
    const other = engineFor(`
  - { name: cold, type: threshold, severity: info, metric: temperature, op: '<', value: 0 }
`);
    other.restoreFiring(before.active(), T0);
    expect(other.active()).toEqual([]);
  });

  it('refuses rules that share a name', () => {
    const [rule] = parseAlertRules(`rules:\n${HOT}`, 'yaml');
    expect(() => new AlertEngine([rule!, rule!])).toThrow('alert rule names must be unique');
  });

  it('prefixes messages with the rule’s description', () => {
    const engine = engineFor(`${HOT}    description: Boiler overheating\n`);
    expect(feed(engine, 'temperature', [[0, 90]])[0]!.message).toBe(
      'Boiler overheating: temperature 90 > 80',
    );
  });
});

describe('properties', () => {
  const RULES = `
  - { name: hot, type: threshold, severity: critical, metric: t, op: '>', value: 5, clear: 3, for: 3s }
  - { name: fast, type: rate_of_change, severity: info, metric: t, abs: true, op: '>', value: 2, for: 1s }
  - { name: silent, type: absence, severity: warning, metric: t, after: 4s }
`;
  /** Strictly increasing offsets (s) with values, and tick times strictly inside the gaps. */
  const scenario = fc
    .array(fc.record({ gap: fc.integer({ min: 1, max: 8 }), value: fc.integer({ min: 0, max: 9 }) }), {
      minLength: 1,
      maxLength: 40,
    })
    .chain((steps) =>
      fc.tuple(fc.constant(steps), fc.array(fc.integer({ min: 1, max: 999 }), { minLength: steps.length })),
    );

  it('gives the same transitions whether or not ticks run between readings, and they alternate', () => {
    fc.assert(
      fc.property(scenario, ([steps, tickFractions]) => {
        const quiet = engineFor(RULES);
        const ticking = engineFor(RULES);
        const a: AlertTransition[] = [];
        const b: AlertTransition[] = [];
        let t = 0;
        steps.forEach(({ gap, value }, i) => {
          // A tick somewhere in (previous reading, this reading): it may only anticipate, not change.
          b.push(...ticking.tick(T0 + t + Math.floor((gap * S * tickFractions[i]!) / 1_000)));
          t += gap * S;
          a.push(...quiet.onEvent(event(t, { t: value }), T0 + t));
          b.push(...ticking.onEvent(event(t, { t: value }), T0 + t));
        });
        expect(b).toEqual(a);
        for (const rule of ['hot', 'fast', 'silent']) {
          const mine = a.filter((x) => x.rule === rule);
          mine.forEach((x, i) => {
            expect(x.state).toBe(i % 2 === 0 ? 'firing' : 'resolved');
            if (i > 0) expect(x.atMs).toBeGreaterThanOrEqual(mine[i - 1]!.atMs);
          });
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('AlertEngine with decoded events', () => {
  it('takes a decoded event’s tsMs as its event time: the same transitions as from its ts', () => {
    const rule = `${HOT}    for: 30s\n    clear: 75\n`;
    const readings: [number, number][] = [
      [0, 81],
      [10 * S, 85],
      [40 * S, 90],
      [50 * S, 70],
    ];
    const plain = feed(engineFor(rule), 'temperature', readings);
    const decodedEngine = engineFor(rule);
    const decoded = readings.flatMap(([offset, value]) =>
      decodedEngine.onEvent(
        decodeCanonicalEvent(JSON.stringify(event(offset, { temperature: value })))!,
        T0 + offset,
      ),
    );
    expect(brief(plain)).toEqual([
      ['firing', 'hot', 30 * S, 85],
      ['resolved', 'hot', 50 * S, 70],
    ]);
    expect(brief(decoded)).toEqual(brief(plain));
    // tsMs is what decides: an event whose tsMs says otherwise is judged at tsMs.
    const shifted = engineFor(HOT).onEvent({ ...event(0, { temperature: 90 }), tsMs: T0 + 5 * S }, T0);
    expect(brief(shifted)).toEqual([['firing', 'hot', 5 * S, 90]]);
  });
});
