import proto from 'sparkplug-payload/lib/sparkplugPayloadProto.js';

/**
 * Sparkplug B payload bytes → the protobuf message, and a metric's value as a number. Pure and total.
 *
 * Decoding uses the generated protobuf code of `sparkplug-payload` (Eclipse Tahu) directly rather
 * than its `decodePayload`, which reads a value by the datatype the metric itself carries: the spec
 * says NDATA and DDATA metrics SHOULD NOT carry one [tck-id-payloads-metric-datatype-not-req], so a
 * value can only be read by the datatype of the birth that defined the metric.
 */
export type SparkplugPayload = proto.org.eclipse.tahu.protobuf.Payload;
export type SparkplugMetric = proto.org.eclipse.tahu.protobuf.Payload.IMetric;
type PropertyValue = proto.org.eclipse.tahu.protobuf.Payload.IPropertyValue;

const Payload = proto.org.eclipse.tahu.protobuf.Payload;

/** The body of a compressed payload is in this uuid's wrapper (Tahu's `SPBV1.0_COMPRESSED`). */
export const COMPRESSED_UUID = 'SPBV1.0_COMPRESSED';

/** Sparkplug B datatypes [Sparkplug 3.0, 6.4.16]. */
export const DATATYPES = {
  Int8: 1,
  Int16: 2,
  Int32: 3,
  Int64: 4,
  UInt8: 5,
  UInt16: 6,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
  Text: 14,
  UUID: 15,
  DataSet: 16,
  Bytes: 17,
  File: 18,
  Template: 19,
  PropertySet: 20,
  PropertySetList: 21,
} as const;
export type DatatypeName = keyof typeof DATATYPES;

const NAMES: readonly (DatatypeName | undefined)[] = (() => {
  const names: (DatatypeName | undefined)[] = [];
  for (const [name, code] of Object.entries(DATATYPES) as [DatatypeName, number][]) names[code] = name;
  return names;
})();

export function datatypeName(code: number): DatatypeName | undefined {
  return NAMES[code];
}

const SIGNED_INTEGERS: ReadonlySet<number> = new Set([1, 2, 3, 4]);
const UNSIGNED_INTEGERS: ReadonlySet<number> = new Set([5, 6, 7, 8]);

/**
 * Datatypes whose values are telemetry: integers, floats and booleans (stored as 1 and 0, as a JSON
 * device's booleans). DateTime, strings, UUIDs, bytes, files, data sets, templates and property sets
 * are not readings of a quantity; their metrics are skipped and counted, never guessed at.
 */
export function isTelemetryDatatype(code: number): boolean {
  return code >= DATATYPES.Int8 && code <= DATATYPES.Boolean;
}

export type Decoded = { ok: true; payload: SparkplugPayload } | { ok: false; detail: string };

/** Details quote device input; bounded so that a dead letter stays small. */
const MAX_DETAIL_CHARS = 200;

export function decodeSparkplugPayload(bytes: Uint8Array): Decoded {
  try {
    return { ok: true, payload: Payload.decode(bytes) };
  } catch (err) {
    // protobufjs throws on truncated or malformed input; a RangeError on absurd nesting too.
    return {
      ok: false,
      detail: `not a Sparkplug B payload: ${(err as Error).message}`.slice(0, MAX_DETAIL_CHARS),
    };
  }
}

interface LongLike {
  toNumber(): number;
  toSigned(): LongLike;
  toUnsigned(): LongLike;
}

function isLong(value: unknown): value is LongLike {
  return typeof value === 'object' && value !== null && 'toNumber' in value;
}

/**
 * A uint64 field (seq, timestamps, aliases, long values) as a number. protobufjs gives a Long: exact
 * up to 2^53, the nearest double beyond (a canonical value is a double anyway).
 */
export function uint64(value: number | LongLike | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  return isLong(value) ? value.toUnsigned().toNumber() : value;
}

/** An alias as a map key: its exact decimal digits, whatever its size. */
export function aliasKey(value: number | LongLike): string {
  return isLong(value) ? value.toUnsigned().toString() : String(value);
}

/** A field protobufjs set on the decoded message, i.e. one present on the wire. */
export function has<K extends string>(message: object, field: K): boolean {
  return Object.hasOwn(message, field);
}

export type MetricValue = { ok: true; value: number } | { ok: false; detail: string };

/**
 * A telemetry metric's value by its birth's datatype, read as sparkplug-payload's decoder reads it:
 * Int8/16/32 from `int_value` as a signed 32-bit number, UInt8/16/32 as unsigned, Int64/UInt64 from
 * `long_value` (either field accepted for any integer type: implementations differ for UInt32).
 * Int64/UInt64 are exact within ±2^53, the nearest double beyond. A Float is the shortest decimal
 * of its float32 (shortestFloat32). Booleans are 1 and 0.
 */
export function metricValue(datatype: number, metric: SparkplugMetric): MetricValue {
  const name = datatypeName(datatype);
  if (datatype === DATATYPES.Boolean) {
    if (!has(metric, 'booleanValue')) return missing(name);
    return { ok: true, value: metric.booleanValue ? 1 : 0 };
  }
  if (datatype === DATATYPES.Float) {
    if (!has(metric, 'floatValue')) return missing(name);
    const value = finite(metric.floatValue as number, name);
    return value.ok ? { ok: true, value: shortestFloat32(value.value) } : value;
  }
  if (datatype === DATATYPES.Double) {
    if (!has(metric, 'doubleValue')) return missing(name);
    return finite(metric.doubleValue as number, name);
  }
  const signed = SIGNED_INTEGERS.has(datatype);
  if (!signed && !UNSIGNED_INTEGERS.has(datatype)) return { ok: false, detail: `${name} is not telemetry` };
  if (has(metric, 'intValue')) {
    const raw = metric.intValue as number;
    return { ok: true, value: signed ? raw | 0 : raw >>> 0 };
  }
  if (has(metric, 'longValue')) {
    const raw = metric.longValue as number | LongLike;
    if (!isLong(raw)) return finite(raw, name);
    return { ok: true, value: (signed ? raw.toSigned() : raw.toUnsigned()).toNumber() };
  }
  return missing(name);
}

/**
 * A float32 as the shortest decimal that is that float32: the edge node sent 70.1, the wire holds
 * 70.09999847412109375, and 70.1 is what it meant (at most 9 significant digits tell float32s apart).
 */
export function shortestFloat32(value: number): number {
  if (value === 0) return value; // toPrecision would make -0 a 0
  for (let digits = 1; digits < 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return candidate;
  }
  return Number(value.toPrecision(9));
}

function missing(name: string | undefined): MetricValue {
  return { ok: false, detail: `no value of its datatype ${name ?? 'unknown'}` };
}

function finite(value: number, name: string | undefined): MetricValue {
  return Number.isFinite(value)
    ? { ok: true, value }
    : { ok: false, detail: `${name} value ${value} is not finite` };
}

/**
 * Metric property keys read as the engineering unit, in this order. `engUnit` is what Ignition's
 * MQTT Transmission and Tahu's examples send; the spec names no unit property.
 */
export const UNIT_PROPERTY_KEYS = ['engUnit', 'engUnits', 'unit'] as const;

const STRING_TYPES: ReadonlySet<number> = new Set([DATATYPES.String, DATATYPES.Text]);

/** The unit a birth's metric properties give, if any (a non-empty String or Text property). */
export function unitOf(metric: SparkplugMetric): string | undefined {
  const keys = metric.properties?.keys;
  const values = metric.properties?.values;
  if (!keys || !values) return undefined;
  for (const wanted of UNIT_PROPERTY_KEYS) {
    const at = keys.indexOf(wanted);
    const value: PropertyValue | undefined = at === -1 ? undefined : values[at];
    if (value === undefined || value.isNull || !STRING_TYPES.has(value.type ?? 0)) continue;
    if (typeof value.stringValue === 'string' && value.stringValue.length > 0) return value.stringValue;
  }
  return undefined;
}
