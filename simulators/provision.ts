import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { DeviceRecord } from '../contract/devices.js';
import { openRegistryBucket } from '../gateway/registry/device-registry.js';
import { generateSecret, hashSecret } from '../gateway/registry/secrets.js';
import { ProvisionError } from './errors.js';

/**
 * Puts a run's devices into the registry bucket, as `npm run devices -- add` does (same record
 * schema, same hashing), and takes them out again afterwards.
 *
 * All devices of a run share one generated secret, hashed once: scrypt costs ~50 ms by design, and a
 * thousand hashes would take most of a minute on two cores. The secret lives only in this process.
 * Records are written with put, not create, so a rerun with the same `--tenant` replaces them.
 */
export interface SimDeviceIdentity {
  id: string;
  tenant: string;
  labels: Record<string, string>;
}

const WRITE_CONCURRENCY = 64;
const NATS_CONNECT_TIMEOUT_MS = 5_000;

async function inBatches<T>(
  items: readonly T[],
  size: number,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

export async function connectRegistryNats(url: string): Promise<NatsConnection> {
  try {
    return await connect({
      servers: url.split(',').map((s) => s.trim()),
      name: 'simulator',
      timeout: NATS_CONNECT_TIMEOUT_MS,
    });
  } catch (err) {
    throw new ProvisionError(`cannot reach NATS at ${url} to provision devices: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Writes every device; returns the shared secret. */
export async function provisionDevices(
  nc: NatsConnection,
  devices: readonly SimDeviceIdentity[],
): Promise<string> {
  const secret = generateSecret();
  const secretHash = await hashSecret(secret);
  const kv = await openRegistryBucket(nc).catch((err: unknown) => {
    throw new ProvisionError(`cannot open the registry bucket: ${(err as Error).message}`, { cause: err });
  });
  const now = new Date().toISOString();
  await inBatches(devices, WRITE_CONCURRENCY, async (d) => {
    const parsed = DeviceRecord.safeParse({
      id: d.id,
      tenant: d.tenant,
      secretHash,
      labels: d.labels,
      disabled: false,
      createdAt: now,
      updatedAt: now,
    });
    if (!parsed.success) {
      throw new ProvisionError(
        `device ${d.id} is not a valid registry record: ${parsed.error.issues[0]!.message}`,
      );
    }
    await kv.put(d.id, JSON.stringify(parsed.data));
  });
  return secret;
}

export async function removeDevices(nc: NatsConnection, ids: readonly string[]): Promise<void> {
  const kv = await openRegistryBucket(nc);
  await inBatches(ids, WRITE_CONCURRENCY, (id) => kv.delete(id));
}
