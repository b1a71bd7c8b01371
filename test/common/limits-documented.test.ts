import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { GATEWAY_LIMITS } from '../../gateway/metrics.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.slice(readme.indexOf('\n## Limits\n'), readme.indexOf('\n## Guarantees\n'));
/** The setting named in the first column of each row of the Limits table. */
const documented = [...section.matchAll(/^\|\s*`([A-Z0-9_]+)`/gm)].map((m) => m[1]!);

it('documents every limit the gateway counts, and no other', () => {
  expect(section.length).toBeGreaterThan(0);
  expect([...documented].sort()).toEqual([...GATEWAY_LIMITS].sort());
});

it('names limits after settings the gateway really has', () => {
  const settings = Object.keys(GatewayConfigSchema.shape);
  for (const limit of GATEWAY_LIMITS) expect(settings).toContain(limit);
});
