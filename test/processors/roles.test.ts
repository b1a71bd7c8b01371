import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { createProcessorMetrics } from '../../processors/metrics.js';
import { FLEET_ROLLUP_ROLE, openRoles, PRESENCE_ROLE, type Role } from '../../processors/roles.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const log = createLogger('test', 'silent');
let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

it('reports a held role that cannot make progress, for /readyz and processor_role_stalled', async () => {
  let presenceProblem: string | undefined;
  const started = new Set<string>();
  const role = (name: Role['name'], stalled: () => string | undefined): Role => ({
    name,
    start: async () => {
      started.add(name);
      return { stop: async () => undefined, stalled };
    },
  });
  const roles = await openRoles(
    nc,
    [role(FLEET_ROLLUP_ROLE, () => undefined), role(PRESENCE_ROLE, () => presenceProblem)],
    { instanceId: 'only', ttlMs: 3_000, replicas: 1, log },
  );
  const metrics = createProcessorMetrics({
    ownedPartitions: () => 0,
    pendingLines: () => 0,
    lag: async () => new Map(),
    stalledRoles: () => roles.stalled().map((s) => s.role),
  });
  const gauge = () => metrics.registry.getSingleMetricAsString('processor_role_stalled');
  roles.start();
  try {
    // The lease round that takes both roles is the first thing start() does.
    await expect.poll(() => started.size, { interval: 20, timeout: 5_000 }).toBe(2);
    expect(roles.stalled()).toEqual([]);
    expect(await gauge()).toContain('processor_role_stalled{role="presence"} 0');

    presenceProblem = 'status rows not written for 31 s';
    expect(roles.stalled()).toEqual([{ role: PRESENCE_ROLE, reason: 'status rows not written for 31 s' }]);
    expect(await gauge()).toContain('processor_role_stalled{role="presence"} 1');
    expect(await gauge()).toContain('processor_role_stalled{role="fleet-rollup"} 0');
  } finally {
    await roles.stop();
  }
  // A role given up is no longer this instance's problem.
  expect(roles.stalled()).toEqual([]);
});
