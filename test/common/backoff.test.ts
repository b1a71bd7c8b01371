import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../common/backoff.js';

describe('backoffMs', () => {
  it('doubles from the minimum up to the maximum, and stays there however many attempts', () => {
    expect([0, 1, 2, 3, 4, 5, 1_000].map((a) => backoffMs(a, 100, 1_000))).toEqual([
      100, 200, 400, 800, 1_000, 1_000, 1_000,
    ]);
  });

  it('with jitter, waits between half of the delay and all of it', () => {
    for (let i = 0; i < 200; i++) {
      const d = backoffMs(3, 100, 10_000, true);
      expect(d).toBeGreaterThanOrEqual(400);
      expect(d).toBeLessThanOrEqual(800);
    }
  });
});
