import type { NatsConnection } from '@nats-io/nats-core';
import { parseDuration } from '../common/duration.js';
import type { Logger } from '../common/logger.js';
import { DEFAULT_ROLE_STALL_TIMEOUT } from './config.js';
import { type LeaseOptions, PartitionLeases } from './leases/partition-leases.js';

/**
 * Work that exactly one processor instance does at a time (the fleet rollup, presence). The roles are
 * shared like partitions, through leases in their own group (`roles.lease.{i}`): an instance that
 * holds a role runs it, a killed holder's role is taken over within the lease TTL, and with several
 * instances the roles spread over them (fair share).
 */
export const FLEET_ROLLUP_ROLE = 'fleet-rollup';
export const PRESENCE_ROLE = 'presence';
/** In lease order: the index of a name is its lease. */
export const ROLE_NAMES = [FLEET_ROLLUP_ROLE, PRESENCE_ROLE] as const;
export type RoleName = (typeof ROLE_NAMES)[number];
export const DEFAULT_ROLE_STALL_TIMEOUT_MS = parseDuration(DEFAULT_ROLE_STALL_TIMEOUT)!;

export interface Role {
  readonly name: RoleName;
  /** Starts the work; resolves once it runs. */
  start(): Promise<RunningRole>;
}

export interface RunningRole {
  /** Stops the work, making durable what it has (the next holder continues from there). */
  stop(): Promise<void>;
  /**
   * Why the role cannot make progress, once it has been stuck on the same work for the stall
   * timeout (a write that does not complete, a consumer that keeps failing); undefined otherwise.
   */
  stalled?(): string | undefined;
}

export interface RolesOptions {
  instanceId: string;
  ttlMs: number;
  replicas: number;
  log: Logger;
  onChange?: (role: string, held: boolean) => void;
  onRound?: LeaseOptions['onRound'];
}

export interface Roles {
  start(): void;
  stop(): Promise<void>;
  /** The roles held here that cannot make progress, and why. */
  stalled(): Array<{ role: RoleName; reason: string }>;
}

/** The lease group the roles are held in (`roles.lease.{i}` in `processor_leases`). */
export const ROLES_LEASE_GROUP = 'roles';

/** Runs the roles as their leases come and go: what a lease holder calls on acquire and release. */
export interface RoleRunner {
  onAcquire(index: number): Promise<void>;
  onRelease(index: number, reason: 'rebalance' | 'lost' | 'shutdown'): Promise<void>;
  /** The roles held here that cannot make progress, and why. */
  stalled(): Array<{ role: RoleName; reason: string }>;
}

export function roleRunner(roles: readonly Role[], o: Pick<RolesOptions, 'log' | 'onChange'>): RoleRunner {
  const running = new Map<number, RunningRole>();
  return {
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
    stalled: () => {
      const stuck: Array<{ role: RoleName; reason: string }> = [];
      for (const [i, role] of running) {
        const reason = role.stalled?.();
        if (reason !== undefined) stuck.push({ role: roles[i]!.name, reason });
      }
      return stuck;
    },
  };
}

/** The roles on leases of their own, kept on this thread (the processor keeps them in its lease worker). */
export async function openRoles(nc: NatsConnection, roles: readonly Role[], o: RolesOptions): Promise<Roles> {
  const runner = roleRunner(roles, o);
  const leases = await PartitionLeases.open(
    nc,
    {
      instanceId: o.instanceId,
      group: ROLES_LEASE_GROUP,
      partitions: roles.length,
      ttlMs: o.ttlMs,
      log: o.log,
      onRound: o.onRound,
      onAcquire: runner.onAcquire,
      onRelease: runner.onRelease,
    },
    o.replicas,
  );
  return {
    start: () => leases.start(),
    stop: () => leases.stop(),
    stalled: runner.stalled,
  };
}
