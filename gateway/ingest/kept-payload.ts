import { isUtf8 } from 'node:buffer';

/**
 * What a dead letter or a presence event keeps of bytes a device sent, and in which form. Pure: the
 * size of what it returns is bounded by construction, whatever the bytes.
 *
 * JSON writes a control character as `\u0001` (6 bytes) and `"` or `\` as 2, so UTF-8 text can grow
 * 6× in a JSON string while base64 grows 4/3×. The kept bytes go as text when that is no longer than
 * base64 (any readable payload: JSON, CSV, a firmware string) and as base64 otherwise: never more than
 * 4 × ⌈n / 3⌉ bytes of JSON for n kept bytes.
 */
export interface KeptPayload {
  text: string;
  encoding: 'utf8' | 'base64';
  /** Bytes kept: the first `maxBytes` at most, cut before a UTF-8 character that did not fit. */
  keptBytes: number;
  truncated: boolean;
}

export function keptPayload(payload: Uint8Array, maxBytes: number): KeptPayload {
  let end = Math.min(payload.byteLength, maxBytes);
  // A continuation byte just past the cut means a character straddles it: cut before that character,
  // so that UTF-8 text stays UTF-8 (and readable). At most 3 back, however invalid the bytes.
  for (let back = 0; back < 3 && end > 0 && end < payload.byteLength && isContinuation(payload[end]!); back++)
    end--;
  const kept = Buffer.from(payload.buffer, payload.byteOffset, end);
  const base64Bytes = 4 * Math.ceil(end / 3);
  const asText = isUtf8(kept) && jsonStringBytes(kept, base64Bytes) <= base64Bytes;
  return {
    text: kept.toString(asText ? 'utf8' : 'base64'),
    encoding: asText ? 'utf8' : 'base64',
    keptBytes: end,
    truncated: end < payload.byteLength,
  };
}

/**
 * The longest start of `text` whose JSON string (without its quotes) takes at most `maxBytes` bytes
 * of UTF-8, never cutting a surrogate pair. For topics and details, which quote device input.
 */
export function clipForJson(text: string, maxBytes: number): string {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let cost: number;
    let units = 1;
    if (c < 0x80) cost = asciiJsonBytes(c);
    else if (c < 0x800) cost = 2;
    else if (c >= 0xd800 && c <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      cost = 4;
      units = 2;
    } else if (c >= 0xd800 && c <= 0xdfff)
      cost = 6; // a lone surrogate: JSON.stringify writes \udxxx
    else cost = 3;
    if (bytes + cost > maxBytes) return text.slice(0, i);
    bytes += cost;
    i += units - 1;
  }
  return text;
}

/** Bytes of UTF-8 `bytes` as the inside of a JSON string; counting stops once past `limit`. */
function jsonStringBytes(bytes: Uint8Array, limit: number): number {
  let total = 0;
  for (let i = 0; i < bytes.length && total <= limit; i++) {
    const b = bytes[i]!;
    // Bytes of multi-byte characters are written as they are.
    total += b < 0x80 ? asciiJsonBytes(b) : 1;
  }
  return total;
}

/** What JSON.stringify writes for an ASCII character inside a string. */
function asciiJsonBytes(c: number): number {
  if (c === 0x22 || c === 0x5c) return 2; // \" \\
  if (c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d) return 2; // \b \t \n \f \r
  return c < 0x20 ? 6 : 1; // \u00XX
}

const isContinuation = (b: number) => (b & 0xc0) === 0x80;
const isLowSurrogate = (c: number) => c >= 0xdc00 && c <= 0xdfff;
