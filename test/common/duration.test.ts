import { expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../common/duration.js';

it.each([
  ['250ms', 250],
  ['10s', 10_000],
  ['1m', 60_000],
  ['1.5h', 5_400_000],
  ['2d', 172_800_000],
  ['500', 500],
  [' 30s ', 30_000],
])('parses %j as %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

it.each(['', 's', '10 x', '-5s', '1e3s', '10sec', 'NaN'])('refuses %j', (text) =>
  expect(parseDuration(text)).toBeUndefined(),
);

it('formats window sizes as tags in their shortest unit', () => {
  expect([10_000, 60_000, 3_600_000, 90_000, 1_500].map(formatDuration)).toEqual([
    '10s',
    '1m',
    '1h',
    '90s',
    '1500ms',
  ]);
});
