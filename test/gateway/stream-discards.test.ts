import { expect, it } from 'vitest';
import { discardedForRoom } from '../../gateway/limits/stream-discards.js';

const MB = 1024 * 1024;

it('counts the messages a stream at its byte limit lost since the last look', () => {
  const before = { firstSeq: 100, bytes: 8 * MB - 4_000, maxBytes: 8 * MB };
  expect(discardedForRoom(before, { firstSeq: 160, bytes: 8 * MB - 1_000, maxBytes: 8 * MB })).toBe(60);
});

it('counts nothing at the first look, below the limit, after a purge, or without a limit', () => {
  const before = { firstSeq: 100, bytes: 8 * MB, maxBytes: 8 * MB };
  expect(discardedForRoom(undefined, before)).toBe(0);
  // Aged out, not discarded for room.
  expect(discardedForRoom(before, { firstSeq: 160, bytes: 2 * MB, maxBytes: 8 * MB })).toBe(0);
  expect(discardedForRoom(before, { firstSeq: 900, bytes: 0, maxBytes: 8 * MB })).toBe(0);
  expect(discardedForRoom(before, { firstSeq: 160, bytes: 8 * MB, maxBytes: -1 })).toBe(0);
});
