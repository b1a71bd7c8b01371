import { expect, it } from 'vitest';
import { formatDuration, missingUnit, parseDuration } from '../../common/duration.js';

it.each([
  ['250ms', 250],
  ['10s', 10_000],
  ['1m', 60_000],
  ['1.5h', 5_400_000],
  ['2d', 172_800_000],
  [' 30s ', 30_000],
  ['0', 0],
  ['0s', 0],
])('parses %j as %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

it.each(['', 's', '10 x', '-5s', '1e3s', '10sec', 'NaN', '20', '1.5', ' 500 '])('refuses %j', (text) =>
  expect(parseDuration(text)).toBeUndefined(),
);

it('says to add a unit to a bare number, and only then', () => {
  expect(missingUnit('20')).toBe('add a unit: 20s');
  expect(missingUnit(' 1.5 ')).toBe('add a unit: 1.5s');
  expect(['0', '20s', '20 x', '', 'ten'].map(missingUnit)).toEqual([
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
});

it('formats window sizes as tags in their shortest unit', () => {
  expect([10_000, 60_000, 3_600_000, 90_000, 1_500].map(formatDuration)).toEqual([
    '10s',
    '1m',
    '1h',
    '90s',
    '1500ms',
  ]);
});
