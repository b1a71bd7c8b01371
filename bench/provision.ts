import type { NatsConnection } from '@nats-io/nats-core';
import { DeviceRegistry } from '../gateway/registry/device-registry.js';
import type { BenchDevice } from './mqtt-load.js';

/** Registry adds at once: scrypt makes each ~40 ms of CPU; a few keep libuv's pool busy without a pile-up. */
const PROVISION_BATCH = 10;

/** Adds the devices to the gateway's registry (tenant `bench`), their passwords as secrets. */
export async function provision(nc: NatsConnection, devices: readonly BenchDevice[]): Promise<void> {
  const registry = await DeviceRegistry.open(nc);
  for (let i = 0; i < devices.length; i += PROVISION_BATCH) {
    await Promise.all(
      devices
        .slice(i, i + PROVISION_BATCH)
        .map((d) => registry.add({ id: d.id, tenant: 'bench', secret: d.password! })),
    );
  }
}
