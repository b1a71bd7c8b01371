import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import { PartitionLeases } from './leases/partition-leases.js';

/**
 * Work that exactly one processor instance does at a time (the fleet rollup, presence). The roles are
 * shared like partitions, through leases in their own group (`roles.lease.{i}`): an instance that
 * holds a role runs it, a killed holder's role is taken over within the lease TTL, and with several
 * instances the roles spread over them (fair share).
 */
export interface Role {
  readonly name: string;
  /** Starts the work; resolves once it runs. */
  start(): Promise<RunningRole>;
}

export interface RunningRole {
  /** Stops the work, making durable what it has (the next holder continues from there). */
  stop(): Promise<void>;
}

export interface RolesOptions {
  instanceId: string;
  ttlMs: number;
  replicas: number;
  log: Logger;
  onChange?: (role: string, held: boolean) => void;
}

export async function openRoles(
  nc: NatsConnection,
  roles: readonly Role[],
  o: RolesOptions,
): Promise<PartitionLeases> {
  const running = new Map<number, RunningRole>();
  return PartitionLeases.open(
    nc,
    {
      instanceId: o.instanceId,
      group: 'roles',
      partitions: roles.length,
      ttlMs: o.ttlMs,
      log: o.log,
      onAcquire: async (i) => {
        running.set(i, await roles[i]!.start());
        o.log.info({ role: roles[i]!.name }, 'role taken');
        o.onChange?.(roles[i]!.name, true);
      },
      onRelease: async (i, reason) => {
        const role = running.get(i);
        running.delete(i);
        o.onChange?.(roles[i]!.name, false);
        await role?.stop();
        o.log.info({ role: roles[i]!.name, reason }, 'role given up');
      },
    },
    o.replicas,
  );
}
