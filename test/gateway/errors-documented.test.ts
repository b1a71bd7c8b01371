import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { REJECTION_REASONS } from '../../contract/rejections.js';

it('documents every dead-letter reason code in the README, and no code that does not exist', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const table = readme.slice(readme.indexOf('### Dead letters'), readme.indexOf('### Presence and downlink'));
  const documented = [...table.matchAll(/^\|\s*`([A-Z0-9_]+)`\s*\|/gm)].map((m) => m[1]);
  expect(documented.sort()).toEqual(Object.keys(REJECTION_REASONS).sort());
});
