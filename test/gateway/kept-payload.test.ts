import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clipForJson, keptPayload } from '../../gateway/ingest/kept-payload.js';
import { decodeStatus } from '../../gateway/presence.js';

const jsonBytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const base64Bytes = (n: number) => 4 * Math.ceil(n / 3);

/** Bytes a device may send: arbitrary, mostly control characters and quotes, or real UTF-8 text. */
const payloads = fc.oneof(
  fc.uint8Array({ maxLength: 600 }),
  fc.uint8Array({ maxLength: 600 }).map((a) => a.map((b) => [0x01, 0x22, 0x5c, 0x0a, 0x41][b % 5]!)),
  fc.string({ unit: 'binary', maxLength: 300 }).map((s) => new Uint8Array(Buffer.from(s))),
);

describe('keptPayload', () => {
  it('keeps the first bytes exactly, never more than 4/3 of them as JSON, whatever they are', () => {
    fc.assert(
      fc.property(payloads, fc.nat({ max: 700 }), (payload, max) => {
        const kept = keptPayload(payload, max);
        const bytes = Buffer.from(kept.text, kept.encoding);
        expect(bytes).toEqual(Buffer.from(payload.subarray(0, kept.keptBytes)));
        expect(kept.keptBytes).toBeLessThanOrEqual(max);
        // Cut at most 3 bytes short: only to keep a UTF-8 character whole.
        expect(kept.keptBytes).toBeGreaterThanOrEqual(Math.min(payload.byteLength, max) - 3);
        expect(kept.truncated).toBe(kept.keptBytes < payload.byteLength);
        expect(jsonBytes(kept.text)).toBeLessThanOrEqual(base64Bytes(kept.keptBytes) + 2);
      }),
    );
  });

  it('keeps UTF-8 text that JSON writes as it is as text, cut before a character that does not fit', () => {
    expect(keptPayload(Buffer.from('{"metrics":{"t":21.5}}'), 4_096)).toEqual({
      text: '{"metrics":{"t":21.5}}',
      encoding: 'utf8',
      keptBytes: 22,
      truncated: false,
    });
    // '€' is 3 bytes: 5 bytes hold one and two thirds of one.
    expect(keptPayload(Buffer.from('a€€'), 5)).toMatchObject({ text: 'a€', keptBytes: 4, truncated: true });
    expect(keptPayload(Buffer.from('🌡🌡'), 7)).toMatchObject({ text: '🌡', keptBytes: 4 });
  });

  it('keeps control characters, quotes and bytes that are not UTF-8 as base64', () => {
    expect(keptPayload(Buffer.alloc(30, 0x01), 100).encoding).toBe('base64');
    expect(keptPayload(Buffer.alloc(30, 0x22), 100).encoding).toBe('base64');
    expect(keptPayload(Buffer.from([0x7b, 0xff, 0x7d]), 100).encoding).toBe('base64');
    expect(keptPayload(Buffer.alloc(10, 0x41), 0)).toEqual({
      text: '',
      encoding: 'utf8',
      keptBytes: 0,
      truncated: true,
    });
  });
});

describe('clipForJson', () => {
  it('returns the longest start of the text that fits, as JSON, in the bytes given', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.nat({ max: 300 }), (text, max) => {
        const clipped = clipForJson(text, max);
        expect(text.startsWith(clipped)).toBe(true);
        expect(jsonBytes(clipped)).toBeLessThanOrEqual(max + 2);
        if (clipped.length < text.length) {
          const next = text.codePointAt(clipped.length)!;
          expect(jsonBytes(clipped + String.fromCodePoint(next))).toBeGreaterThan(max + 2);
        }
      }),
    );
  });

  it('counts what JSON makes of control characters, and never splits a surrogate pair', () => {
    expect(clipForJson('\u0001'.repeat(100), 256)).toBe('\u0001'.repeat(42));
    expect(clipForJson('ab🌡', 5)).toBe('ab');
    expect(clipForJson('ab🌡', 6)).toBe('ab🌡');
  });
});

describe('decodeStatus', () => {
  it('keeps JSON as its value, unless writing it out again makes it longer than base64', () => {
    expect(decodeStatus(Buffer.from('{"online":false}'), 4_096)).toEqual({
      status: { online: false },
      statusEncoding: 'json',
      statusBytes: 16,
      statusTruncated: false,
    });
    expect(decodeStatus(Buffer.from('[1e20,1e20,1e20]'), 4_096).statusEncoding).toBe('utf8');
  });

  it('keeps anything else within 4/3 of the bytes kept', () => {
    fc.assert(
      fc.property(payloads, fc.nat({ max: 700 }), (payload, max) => {
        const fields = decodeStatus(payload, max);
        expect(jsonBytes(fields.status)).toBeLessThanOrEqual(
          base64Bytes(Math.min(payload.byteLength, max)) + 2,
        );
        expect(fields.statusBytes).toBe(payload.byteLength);
      }),
    );
  });
});
