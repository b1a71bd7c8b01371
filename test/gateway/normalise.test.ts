import { describe, expect, it } from 'vitest';
import { CanonicalEvent, type DeviceReading } from '../../contract/index.js';
import { messageIdOf, normaliseReading, type ReadingContext } from '../../gateway/ingest/normalise.js';

const NOW = Date.parse('2026-11-28T12:00:00.000Z');
const ctx = (over: Partial<ReadingContext> = {}): ReadingContext => ({
  tenant: 'acme',
  deviceId: 'dev-1',
  labels: { type: 'thermo' },
  receivedAtMs: NOW,
  receivedAtIso: new Date(NOW).toISOString(),
  publishName: () => 'pub17',
  deduplicate: true,
  maxFutureMs: 60_000,
  maxAgeMs: 3_600_000,
  ...over,
});
const reading = (over: Partial<DeviceReading> = {}): DeviceReading => ({
  metrics: [{ name: 'temperature', value: 21.5 }],
  ...over,
});

describe('normaliseReading', () => {
  it('builds a canonical event that satisfies the contract schema', () => {
    const r = normaliseReading(
      reading({
        ts: NOW - 1000,
        seq: 3,
        metrics: [
          { name: 'temperature', value: 70.1, unit: 'degF' },
          { name: 'rssi', value: -70 },
        ],
      }),
      2,
      0,
      ctx(),
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(CanonicalEvent.parse(r.event)).toEqual(r.event);
    expect(r.event).toMatchObject({
      tenant: 'acme',
      deviceId: 'dev-1',
      ts: '2026-11-28T11:59:59.000Z',
      receivedAt: '2026-11-28T12:00:00.000Z',
      seq: 3,
      schemaVersion: 2,
      labels: { type: 'thermo' },
      metrics: { rssi: { value: -70, unit: '' } },
    });
    expect(r.event.metrics.temperature).toEqual({
      value: expect.closeTo(21.1667, 4),
      unit: 'degC',
      originalUnit: 'degF',
    });
  });

  it('gives unitless readings of known quantities their canonical unit, and omits originalUnit when unchanged', () => {
    const r = normaliseReading(
      reading({
        metrics: [
          { name: 'pressure', value: 1000 },
          { name: 'humidity', value: 40, unit: '%' },
        ],
      }),
      1,
      0,
      ctx(),
    );
    expect(r.ok && r.event.metrics).toEqual({
      pressure: { value: 1000, unit: 'hPa' },
      humidity: { value: 40, unit: '%' },
    });
  });

  it('uses the receive time when the device sent none', () => {
    const r = normaliseReading(reading(), 1, 0, ctx());
    expect(r.ok && r.event.ts).toBe('2026-11-28T12:00:00.000Z');
  });

  it.each([
    [NOW + 61_000, 'TS_IN_FUTURE'],
    [NOW - 3_600_001, 'TS_TOO_OLD'],
  ])('refuses ts %d with %s', (ts, reason) => {
    expect(normaliseReading(reading({ ts }), 1, 0, ctx())).toMatchObject({ ok: false, reason });
  });

  it('accepts the bounds themselves', () => {
    expect(normaliseReading(reading({ ts: NOW + 60_000 }), 1, 0, ctx()).ok).toBe(true);
    expect(normaliseReading(reading({ ts: NOW - 3_600_000 }), 1, 0, ctx()).ok).toBe(true);
  });

  it('refuses the whole reading when one unit is wrong', () => {
    const r = normaliseReading(
      reading({
        metrics: [
          { name: 'a', value: 1 },
          { name: 'temperature', value: 1, unit: 'psi' },
        ],
      }),
      2,
      0,
      ctx(),
    );
    expect(r).toMatchObject({ ok: false, reason: 'UNIT_MISMATCH' });
  });
});

describe('messageIdOf (dedup key)', () => {
  it('is the same for a retransmission of a reading with seq and ts', () => {
    const r = reading({ seq: 5, ts: NOW - 10 });
    expect(messageIdOf(r, ctx({ publishName: () => 'a' }), 0)).toBe(
      messageIdOf(r, ctx({ publishName: () => 'b', receivedAtMs: NOW + 5000 }), 0),
    );
  });

  it('differs for a rebooted device that restarts seq at 0 with a new ts', () => {
    expect(messageIdOf(reading({ seq: 0, ts: NOW - 60_000 }), ctx(), 0)).not.toBe(
      messageIdOf(reading({ seq: 0, ts: NOW }), ctx(), 0),
    );
  });

  it('differs between devices and tenants', () => {
    const r = reading({ seq: 1, ts: NOW });
    const ids = new Set([
      messageIdOf(r, ctx(), 0),
      messageIdOf(r, ctx({ deviceId: 'dev-2' }), 0),
      messageIdOf(r, ctx({ tenant: 'other' }), 0),
    ]);
    expect(ids.size).toBe(3);
  });

  it('without seq, hashes the content including ts', () => {
    const a = messageIdOf(reading({ ts: NOW }), ctx(), 0);
    expect(a).toBe(messageIdOf(reading({ ts: NOW }), ctx({ publishName: () => 'other' }), 0));
    expect(a).not.toBe(messageIdOf(reading({ ts: NOW + 1 }), ctx(), 0));
    expect(a).not.toBe(
      messageIdOf(reading({ ts: NOW, metrics: [{ name: 'temperature', value: 21.6 }] }), ctx(), 0),
    );
  });

  it('without ts, names equal readings by their publish and place in it, with or without seq', () => {
    const r = reading();
    expect(messageIdOf(r, ctx({ publishName: () => 'p1' }), 0)).toBe(
      messageIdOf(r, ctx({ publishName: () => 'p1', receivedAtMs: NOW + 9 }), 0),
    );
    expect(messageIdOf(r, ctx({ publishName: () => 'p1' }), 0)).not.toBe(
      messageIdOf(r, ctx({ publishName: () => 'p2' }), 0),
    );
    expect(messageIdOf(r, ctx({ publishName: () => 'p1' }), 0)).not.toBe(
      messageIdOf(r, ctx({ publishName: () => 'p1' }), 1),
    );
    // seq alone does not name a reading: a rebooted device starts it over.
    expect(messageIdOf(reading({ seq: 0 }), ctx({ publishName: () => 'p1' }), 0)).not.toBe(
      messageIdOf(reading({ seq: 0 }), ctx({ publishName: () => 'p2' }), 0),
    );
  });

  it('asks for the publish name only when the content cannot name the reading', () => {
    let asked = 0;
    const counting = ctx({ publishName: () => `p${++asked}` });
    messageIdOf(reading({ ts: NOW }), counting, 0);
    messageIdOf(reading({ ts: NOW, seq: 1 }), counting, 0);
    expect(asked).toBe(0);
    messageIdOf(reading(), counting, 0);
    expect(asked).toBe(1);
  });

  it('has no key for QoS 0 readings without ts, and the event still gets a unique id', () => {
    let n = 0;
    const qos0 = ctx({ deduplicate: false, publishName: () => `q${n++}` });
    expect(messageIdOf(reading(), qos0, 0)).toBeUndefined();
    const a = normaliseReading(reading(), 1, 0, qos0);
    const b = normaliseReading(reading(), 1, 0, qos0);
    expect(a.ok && b.ok && a.event.id !== b.event.id).toBe(true);
  });
});
