import { expect, it } from 'vitest';
import { keepaliveFor } from '../../gateway/limits/keepalive-policy.js';

const policy = { minSeconds: 5, maxSeconds: 1_200 };

it('applies the maximum to keepalive 0 (none) and to more than the maximum', () => {
  expect(keepaliveFor(0, policy)).toEqual({ seconds: 1_200, applied: 'MAX_KEEPALIVE_SECONDS' });
  expect(keepaliveFor(65_535, policy)).toEqual({ seconds: 1_200, applied: 'MAX_KEEPALIVE_SECONDS' });
  expect(keepaliveFor(1_201, policy)).toEqual({ seconds: 1_200, applied: 'MAX_KEEPALIVE_SECONDS' });
});

it('applies the minimum below it, and leaves what is within the bounds', () => {
  expect(keepaliveFor(1, policy)).toEqual({ seconds: 5, applied: 'MIN_KEEPALIVE_SECONDS' });
  expect(keepaliveFor(4, policy)).toEqual({ seconds: 5, applied: 'MIN_KEEPALIVE_SECONDS' });
  for (const k of [5, 60, 1_200]) expect(keepaliveFor(k, policy)).toEqual({ seconds: k, applied: undefined });
});

it('with no maximum (0) lets keepalive 0 and any value through, the minimum still applying', () => {
  const open = { minSeconds: 5, maxSeconds: 0 };
  expect(keepaliveFor(0, open)).toEqual({ seconds: 0, applied: undefined });
  expect(keepaliveFor(65_535, open)).toEqual({ seconds: 65_535, applied: undefined });
  expect(keepaliveFor(2, open)).toEqual({ seconds: 5, applied: 'MIN_KEEPALIVE_SECONDS' });
});
