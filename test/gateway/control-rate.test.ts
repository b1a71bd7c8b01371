import { expect, it } from 'vitest';
import { ControlBucket } from '../../gateway/limits/control-rate.js';

it('lets a burst through, then one packet per 1/rate seconds, and refuses beyond', () => {
  let now = 0;
  const bucket = new ControlBucket(10, 5, () => now);
  expect(Array.from({ length: 5 }, () => bucket.take())).toEqual([true, true, true, true, true]);
  expect(bucket.take()).toBe(false);
  now += 100; // one token back
  expect(bucket.take()).toBe(true);
  expect(bucket.take()).toBe(false);
  now += 10_000; // refilled, but never beyond the burst
  expect(Array.from({ length: 6 }, () => bucket.take())).toEqual([true, true, true, true, true, false]);
});
