import type { RejectionReason } from '../contract/rejections.js';
import { toCanonical } from '../contract/units.js';
import { METRIC_UNITS } from './signals.js';

/**
 * Device payloads as the contract defines them (README "Payloads"), and invalid ones that the
 * gateway must dead-letter with a known reason. Pure.
 */

/** One sample of a device: values in canonical units, as the signal models give them. */
export interface SimReading {
  ts: number;
  seq: number;
  values: Readonly<Record<string, number>>;
}

export interface EncodedReading {
  /** The reading's JSON, one element of a payload. */
  json: string;
  /**
   * What the gateway will store: each metric in its canonical unit, converted with the contract's
   * own table (so a °F reading is the same double the gateway computes).
   */
  canonical: Array<[metric: string, value: number]>;
  ts: number;
  fahrenheit: boolean;
}

/** The spellings of °F a device may use; all are in contract/units.ts. */
export const FAHRENHEIT_UNITS = ['degF', '°F', 'F', 'fahrenheit'] as const;

export function celsiusToFahrenheit(celsius: number): number {
  // Rounded to what a °F sensor shows; the ledger keeps the converted-back value, not `celsius`.
  return Math.round(((celsius * 9) / 5) * 100 + 3200) / 100;
}

function canonicalOf(metric: string, value: number, unit: string): number {
  const converted = toCanonical(metric, value, unit);
  if (!converted.ok) throw new Error(`simulator bug: ${metric} in ${unit}: ${converted.detail}`);
  return converted.value;
}

/**
 * Version 1 (plain numbers, epoch ms) or version 2 (value + unit, ISO time). `fahrenheitUnit` sends
 * the temperature in °F, which needs version 2.
 */
export function encodeReading(reading: SimReading, version: 1 | 2, fahrenheitUnit?: string): EncodedReading {
  const names = Object.keys(reading.values);
  const canonical: Array<[string, number]> = [];
  let fahrenheit = false;
  if (version === 1 && fahrenheitUnit === undefined) {
    for (const name of names) canonical.push([name, reading.values[name]!]);
    return {
      json: JSON.stringify({ ts: reading.ts, seq: reading.seq, metrics: reading.values }),
      canonical,
      ts: reading.ts,
      fahrenheit,
    };
  }
  const metrics: Record<string, { value: number; unit: string }> = {};
  for (const name of names) {
    let value = reading.values[name]!;
    let unit = METRIC_UNITS[name] ?? 'count';
    if (name === 'temperature' && fahrenheitUnit !== undefined) {
      value = celsiusToFahrenheit(value);
      unit = fahrenheitUnit;
      fahrenheit = true;
    }
    metrics[name] = { value, unit };
    canonical.push([name, canonicalOf(name, value, unit)]);
  }
  return {
    json: JSON.stringify({ v: 2, ts: new Date(reading.ts).toISOString(), seq: reading.seq, metrics }),
    canonical,
    ts: reading.ts,
    fahrenheit,
  };
}

/** One reading alone, several as a JSON array (a batch). */
export function payloadOf(readings: readonly EncodedReading[]): string {
  if (readings.length === 1) return readings[0]!.json;
  return `[${readings.map((r) => r.json).join(',')}]`;
}

/**
 * Reasons the simulator provokes, each with a payload that the gateway rejects with exactly that
 * code (a single reading, so one dead letter per message). Each payload is made unique by `nonce`:
 * the gateway deduplicates dead letters by packet id and content, and packet ids repeat.
 * Every payload names a real metric and a current time, so one wrongly accepted would show up in
 * the TSDB and `verify` would report it.
 */
export const INVALID_REASONS = [
  'PAYLOAD_NOT_JSON',
  'PAYLOAD_NOT_UTF8',
  'SCHEMA_INVALID',
  'METRICS_EMPTY',
  'METRIC_NAME_INVALID',
  'VALUE_INVALID',
  'VERSION_UNSUPPORTED',
  'TS_INVALID',
  'TS_IN_FUTURE',
  'SEQ_INVALID',
  'UNIT_UNKNOWN',
  'UNIT_MISMATCH',
] as const satisfies readonly RejectionReason[];
export type InvalidReason = (typeof INVALID_REASONS)[number];

/** An hour ahead: well past the gateway's default TS_MAX_FUTURE_MS (5 min). */
const FUTURE_MS = 3_600_000;

export function invalidPayload(reason: InvalidReason, ts: number, nonce: number): Buffer {
  const seq = nonce;
  const json = (value: unknown) => Buffer.from(JSON.stringify(value));
  switch (reason) {
    case 'PAYLOAD_NOT_JSON':
      return Buffer.from(`{"ts":${ts},"seq":${seq},"metrics":{"temperature":21.5}`);
    case 'PAYLOAD_NOT_UTF8':
      // 0xC3 starts a two-byte sequence; 0x28 cannot continue it.
      return Buffer.concat([
        Buffer.from(`{"seq":${seq},"x":"`),
        Buffer.from([0xc3, 0x28]),
        Buffer.from('"}'),
      ]);
    case 'SCHEMA_INVALID':
      return json({ ts, seq, metrics: 'temperature=21.5' });
    case 'METRICS_EMPTY':
      return json({ ts, seq, metrics: {} });
    case 'METRIC_NAME_INVALID':
      return json({ ts, seq, metrics: { 'temperature reading': 21.5 } });
    case 'VALUE_INVALID':
      return json({ ts, seq, metrics: { temperature: 'warm' } });
    case 'VERSION_UNSUPPORTED':
      return json({ v: 7, ts, seq, metrics: { temperature: 21.5 } });
    case 'TS_INVALID':
      return json({ ts: 'yesterday', seq, metrics: { temperature: 21.5 } });
    case 'TS_IN_FUTURE':
      return json({ ts: ts + FUTURE_MS, seq, metrics: { temperature: 21.5 } });
    case 'SEQ_INVALID':
      return json({ ts, seq: -1 - nonce, metrics: { temperature: 21.5 } });
    case 'UNIT_UNKNOWN':
      return json({ v: 2, ts, seq, metrics: { temperature: { value: 21.5, unit: 'degX' } } });
    case 'UNIT_MISMATCH':
      return json({ v: 2, ts, seq, metrics: { temperature: { value: 21.5, unit: 'psi' } } });
  }
}
