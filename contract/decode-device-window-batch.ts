import { isLabels, isObject } from './decode-canonical-event.js';
import { type DeviceWindowBatch, DeviceWindowBatch as DeviceWindowBatchSchema } from './event.js';

const decoder = new TextDecoder();

/**
 * Decodes one WINDOWS message (JSON bytes or text): the batch when `DeviceWindowBatch` (the zod
 * schema, contract/event.ts) accepts it, else undefined. As decodeCanonicalEvent does for events: one
 * JSON.parse, a hand check of the shape the processors write, returned without a copy; anything the
 * check is not sure of goes to the schema, whose answer stands (unknown keys are kept, not stripped).
 */
export function decodeDeviceWindowBatch(input: Uint8Array | string): DeviceWindowBatch | undefined {
  let value: unknown;
  try {
    value = JSON.parse(typeof input === 'string' ? input : decoder.decode(input));
  } catch {
    return undefined;
  }
  if (isDeviceWindowBatch(value)) return value;
  const parsed = DeviceWindowBatchSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/**
 * True when the schema surely accepts `v` (from JSON.parse) as it is. Exported for the test that holds
 * it to the schema.
 */
export function isDeviceWindowBatch(v: unknown): v is DeviceWindowBatch {
  if (!Array.isArray(v) || v.length === 0) return false;
  for (const item of v) {
    if (!isObject(item)) return false;
    const w = item as Record<string, unknown>;
    if (
      typeof w.tenant !== 'string' ||
      typeof w.deviceId !== 'string' ||
      typeof w.metric !== 'string' ||
      typeof w.window !== 'string' ||
      typeof w.final !== 'boolean' ||
      !(Number.isSafeInteger(w.windowMs) && (w.windowMs as number) > 0) ||
      !Number.isSafeInteger(w.startMs) ||
      !(Number.isSafeInteger(w.count) && (w.count as number) > 0) ||
      !isFiniteNumber(w.sum) ||
      !isFiniteNumber(w.min) ||
      !isFiniteNumber(w.max) ||
      !isFiniteNumber(w.mean) ||
      !isLabels(w.labels)
    )
      return false;
  }
  return true;
}

/** z.number() refuses NaN and ±Infinity (which JSON.parse makes of 1e999). */
function isFiniteNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}
