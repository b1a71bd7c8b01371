import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { createGatewayMetrics, GATEWAY_LIMITS } from '../../gateway/metrics.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessorMetrics, PROCESSOR_LIMITS } from '../../processors/metrics.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.slice(readme.indexOf('\n## Limits\n'), readme.indexOf('\n## Guarantees\n'));
/** The setting named in the first column of each row of the Limits table. */
const documented = [...section.matchAll(/^\|\s*`([A-Z0-9_]+)`/gm)].map((m) => m[1]!);

it('documents every limit the gateway and the processors count, and no other', () => {
  expect(section.length).toBeGreaterThan(0);
  // A setting both services had would need two rows; none does, and one row per name keeps it so.
  expect(new Set(documented).size).toBe(documented.length);
  expect([...documented].sort()).toEqual([...GATEWAY_LIMITS, ...PROCESSOR_LIMITS].sort());
});

it('names limits after settings the gateway really has', () => {
  const settings = Object.keys(GatewayConfigSchema.shape);
  for (const limit of GATEWAY_LIMITS) expect(settings).toContain(limit);
});

it('names limits after settings the processors really have', () => {
  const settings = Object.keys(ProcessorConfigSchema.shape);
  for (const limit of PROCESSOR_LIMITS) expect(settings).toContain(limit);
});

it('starts every limit counter at 0, so that each shows before it is first hit', async () => {
  const metrics = createProcessorMetrics({
    ownedPartitions: () => 0,
    pendingLines: () => 0,
    lag: async () => new Map(),
  });
  const text = await metrics.registry.getSingleMetricAsString('processor_limit_reached_total');
  for (const limit of PROCESSOR_LIMITS)
    expect(text).toContain(`processor_limit_reached_total{limit="${limit}"} 0`);
});

it('shows every gateway limit from the start, at 0', async () => {
  const metrics = createGatewayMetrics({
    inFlight: () => 0,
    natsConnected: () => true,
    connections: () => 0,
  });
  const values = (await metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values;
  expect(values.map((v) => v.labels.limit).sort()).toEqual([...GATEWAY_LIMITS].sort());
  expect(values.every((v) => v.value === 0)).toBe(true);
});
