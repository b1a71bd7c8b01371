import { describe, expect, it } from 'vitest';
import type { PayloadEncoding } from '../../contract/topics.js';
import { normaliseReading, type ReadingContext } from '../../gateway/ingest/normalise.js';
import { parseTelemetryPayload } from '../../gateway/ingest/parse-payload.js';
import {
  DeviceScript,
  EPISODE_EVERY_MS,
  type FaultMix,
  LATE_MAX_MS,
  NAP_MS,
  NO_FAULTS,
  type OutMessage,
  OVERHEAT_DEGREES,
  OVERHEAT_MS,
  type ScriptSettings,
} from '../../simulators/device-script.js';
import { INVALID_REASONS } from '../../simulators/payloads.js';
import { DEVICE_TYPES } from '../../simulators/signals.js';

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);

function settings(faults: Partial<FaultMix> = {}, extra: Partial<ScriptSettings> = {}): ScriptSettings {
  return {
    seed: 1234,
    schema: 'mixed',
    batch: 1,
    publishPeriodMs: 500,
    publishes: 400,
    faults: { ...NO_FAULTS, ...faults },
    startTodS: 0,
    ...extra,
  };
}

function runScript(s: ScriptSettings, index = 0, type: (typeof DEVICE_TYPES)[number] = 'environment') {
  const script = new DeviceScript({ index, id: `dev-${index}`, type }, s);
  script.begin(T0);
  const messages: OutMessage[] = [];
  const churns: number[] = [];
  while (!script.done) {
    const step = script.step();
    messages.push(...step.messages);
    if (step.churn) churns.push(step.churn.downtimeMs);
  }
  return { script, messages, churns };
}

/** What the gateway does with a payload: the pure parse and normalise steps it runs. */
function gatewayView(payload: string | Buffer, receivedAtMs: number, encoding: PayloadEncoding = 'json') {
  const ctx: ReadingContext = {
    tenant: 't',
    deviceId: 'dev-0',
    labels: {},
    receivedAtMs,
    receivedAtIso: new Date(receivedAtMs).toISOString(),
    publishName: () => 'publish-1',
    deduplicate: true,
    maxFutureMs: 5 * 60_000,
    maxAgeMs: 7 * 24 * 3_600_000,
  };
  const parsed = parseTelemetryPayload(Buffer.from(payload), 65_536, 1_000, encoding);
  return parsed.readings.map((r) => (r.ok ? normaliseReading(r.reading, r.version, r.index, ctx) : r));
}

const payloads = (ms: OutMessage[]) => ms.map((m) => Buffer.from(m.payload).toString('base64'));

describe('DeviceScript', () => {
  it('sends the same messages for the same seed, whatever else runs', () => {
    const all: Partial<FaultMix> = {
      invalid: 10,
      duplicates: 10,
      late: 10,
      outOfOrder: 10,
      fahrenheit: 20,
      churn: 30,
    };
    const a = runScript(settings(all));
    const b = runScript(settings(all));
    expect(payloads(a.messages)).toEqual(payloads(b.messages));
    expect(a.churns).toEqual(b.churns);
    const other = runScript(settings(all, { seed: 99 }));
    expect(payloads(other.messages)).not.toEqual(payloads(a.messages));
  });

  it('does not change the signal when faults are turned on', () => {
    const plain = runScript(settings());
    const faulty = runScript(settings({ invalid: 20, late: 20, outOfOrder: 20, duplicates: 20 }));
    const values = (ms: OutMessage[]) =>
      ms
        .flatMap((m) => m.readings)
        .sort((x, y) => x.ts - y.ts)
        .map((r) => r.canonical);
    expect(values(faulty.messages)).toEqual(values(plain.messages));
  });

  it('gives every reading its own seq and ts, on the schedule', () => {
    const { messages, script } = runScript(settings({}, { batch: 4, publishes: 50 }));
    const readings = messages.flatMap((m) => m.readings);
    expect(readings).toHaveLength(200);
    expect(new Set(readings.map((r) => r.ts)).size).toBe(200);
    const ts = readings.map((r) => r.ts);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
    expect(ts[0]! - T0).toBeLessThan(500);
    expect(ts.at(-1)! - ts[0]!).toBe(Math.round(script.phaseMs + 199 * 125) - Math.round(script.phaseMs));
    // A batch is a JSON array of four readings.
    expect(JSON.parse(String(messages[0]!.payload))).toHaveLength(4);
  });

  it('holds late readings back 1–4 s behind the newest, inside the processors’ 5 s lateness', () => {
    const { messages } = runScript(settings({ late: 15 }));
    let newest = Number.NEGATIVE_INFINITY;
    let late = 0;
    for (const m of messages) {
      for (const r of m.readings) {
        if (m.kind === 'late') {
          late++;
          expect(newest - r.ts).toBeGreaterThan(0);
          expect(newest - r.ts).toBeLessThanOrEqual(LATE_MAX_MS);
        }
        newest = Math.max(newest, r.ts);
      }
    }
    expect(late).toBeGreaterThan(20);
  });

  it('swaps adjacent publishes for out of order, never more than two periods back', () => {
    const { messages } = runScript(settings({ outOfOrder: 20 }));
    const swapped = messages.filter((m) => m.swapped);
    expect(swapped.length).toBeGreaterThan(20);
    let newest = Number.NEGATIVE_INFINITY;
    for (const m of messages) {
      for (const r of m.readings) {
        expect(newest - r.ts).toBeLessThanOrEqual(1_000);
        newest = Math.max(newest, r.ts);
      }
    }
  });

  it('makes invalid messages the gateway rejects with the recorded reason', () => {
    const { messages } = runScript(settings({ invalid: 50 }, { publishes: 600 }));
    const invalid = messages.filter((m) => m.kind === 'invalid');
    expect(new Set(invalid.map((m) => m.reason))).toEqual(new Set(INVALID_REASONS));
    for (const m of invalid) {
      const results = gatewayView(m.payload, T0 + 300_000);
      expect(results).toHaveLength(1);
      expect(results[0]).toMatchObject({ ok: false, reason: m.reason });
    }
    // Each one unique: the gateway deduplicates dead letters by packet id and content.
    expect(new Set(payloads(invalid)).size).toBe(invalid.length);
  });

  it('sends readings the gateway accepts, with the canonical values the ledger keeps (°F included)', () => {
    for (const type of DEVICE_TYPES) {
      const { messages } = runScript(
        settings({ fahrenheit: 40, late: 5 }, { batch: 3, publishes: 100, encoding: 'mixed' }),
        3,
        type,
      );
      let fahrenheit = 0;
      const encodings = new Set(messages.map((m) => m.encoding));
      expect(encodings).toEqual(new Set(['json', 'cbor']));
      for (const m of messages) {
        const results = gatewayView(m.payload, T0 + 300_000, m.encoding);
        expect(results.map((r) => r.ok)).toEqual(m.readings.map(() => true));
        results.forEach((r, i) => {
          if (!r.ok) return;
          const want = m.readings[i]!;
          if (want.fahrenheit) fahrenheit++;
          expect(Date.parse(r.event.ts)).toBe(want.ts);
          expect(Object.entries(r.event.metrics).map(([k, v]) => [k, v.value])).toEqual(want.canonical);
        });
      }
      if (type !== 'meter') expect(fahrenheit).toBeGreaterThan(10);
    }
  });

  it('marks duplicates to be sent again, and decides churn per device and minute', () => {
    const { messages, churns } = runScript(settings({ duplicates: 25, churn: 100 }, { publishes: 1_200 }));
    const dup = messages.filter((m) => m.duplicate).length / messages.length;
    expect(dup).toBeGreaterThan(0.15);
    expect(dup).toBeLessThan(0.35);
    // 1,200 publishes at 2/s = 10 minutes at 100 %/min: about ten drops.
    expect(churns.length).toBeGreaterThan(3);
    expect(churns.length).toBeLessThan(25);
    for (const d of churns) expect(d >= 500 && d <= 2_000).toBe(true);
  });

  it('goes silent part-way for offline devices, and flushes what it held back', () => {
    let silent = 0;
    for (let index = 0; index < 40; index++) {
      const { script, messages } = runScript(settings({ offline: 50, late: 10, outOfOrder: 10 }), index);
      const readings = messages.flatMap((m) => m.readings).length;
      if (script.silentFrom === undefined) {
        expect(readings).toBe(400);
        continue;
      }
      silent++;
      expect(script.silentFrom).toBeGreaterThanOrEqual(120);
      expect(script.silentFrom).toBeLessThanOrEqual(280);
      expect(readings).toBe(script.silentFrom);
      expect(Math.max(...messages.flatMap((m) => m.readings.map((r) => r.ts)))).toBeLessThan(
        script.silentFromTs!,
      );
    }
    expect(silent).toBeGreaterThan(10);
    expect(silent).toBeLessThan(30);
  });

  it('runs a thermometer hot in 30 s episodes every 5 minutes, the first within 90 s, and only thermometers', () => {
    // 2 publishes a second for 12 minutes: three episodes.
    const long = settings({ overheat: 100 }, { publishes: 1_440 });
    const hot = runScript(long, 0, 'thermometer').messages.flatMap((m) => m.readings);
    const cool = runScript(settings({}, { publishes: 1_440 }), 0, 'thermometer').messages.flatMap(
      (m) => m.readings,
    );
    expect(hot.map((r) => r.ts)).toEqual(cool.map((r) => r.ts));
    const excess = hot.map((r, i) => r.canonical[0]![1] - cool[i]!.canonical[0]![1]);
    const hotTs = hot.filter((_, i) => excess[i]! > OVERHEAT_DEGREES - 0.02).map((r) => r.ts - T0);
    expect(excess.every((e) => Math.abs(e) < 0.02 || Math.abs(e - OVERHEAT_DEGREES) < 0.02)).toBe(true);
    expect(hotTs[0]).toBeGreaterThanOrEqual(20_000);
    expect(hotTs[0]).toBeLessThan(90_000 + 500);
    expect(hotTs.length).toBe((3 * OVERHEAT_MS) / 500);
    expect(hotTs.at(-1)! - hotTs[0]!).toBeLessThan(2 * EPISODE_EVERY_MS + OVERHEAT_MS);
    // Other device types keep their temperature.
    const vibration = (faults: Partial<FaultMix>) =>
      runScript(settings(faults, { publishes: 400 }), 1, 'vibration').messages.flatMap((m) => m.readings);
    expect(vibration({ overheat: 100 })).toEqual(vibration({}));
  });

  it('naps 75 s every 5 minutes, the first within 90 s, on exactly the share of devices asked for', () => {
    const napping: number[] = [];
    for (let index = 0; index < 20; index++) {
      // 2 publishes a second for 800 s: three whole naps.
      const { messages } = runScript(settings({ naps: 10 }, { publishes: 1_600 }), index);
      const ts = messages.flatMap((m) => m.readings.map((r) => r.ts - T0)).sort((a, b) => a - b);
      const gaps = ts
        .slice(1)
        .map((t, i) => [ts[i]!, t - ts[i]!] as const)
        .filter(([, gap]) => gap > 1_000);
      if (gaps.length === 0) {
        expect(ts).toHaveLength(1_600);
        continue;
      }
      napping.push(index);
      expect(gaps).toHaveLength(3);
      expect(gaps[0]![0]).toBeGreaterThanOrEqual(20_000 - 500);
      expect(gaps[0]![0]).toBeLessThan(90_000);
      for (const [, gap] of gaps) expect(Math.abs(gap - NAP_MS)).toBeLessThanOrEqual(500);
    }
    expect(napping).toEqual([9, 19]);
  });
});
