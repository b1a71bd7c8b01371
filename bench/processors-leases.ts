import { Kvm, type KvWatchEntry, KvWatchInclude } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/nats-core';
import { PROCESSOR_LEASES_BUCKET } from '../contract/subjects.js';

/**
 * Watches the processors' lease bucket during a round, from outside, to say how their lease rounds
 * went: the longest time between two heartbeats of one instance (a heartbeat is the first write of a
 * round, every LEASE_TTL/3; if the gap passes LEASE_TTL the others may take its partitions), and how
 * often a partition changed owner after it was first claimed (each time, the new owner replays it
 * from the last checkpoint). Keys and values as PartitionLeases writes them (partition-leases.ts):
 * `partitions.instance.{id}` = `{ expiresAt }` and `partitions.lease.{p}` = `{ owner, expiresAt }`.
 */
export interface LeaseReport {
  /** Instance id → longest gap between two of its heartbeats, ms (server time). */
  heartbeatGapMs: Map<string, number>;
  /** Lease entries whose owner differs from the previous owner's (a take-over, not a first claim). */
  handovers: number;
  /** Leases given back (deleted) while the round ran: rebalancing, or an owner that lost one. */
  releases: number;
}

/** The group the processors lease their partitions in (processor.ts), and its key prefixes. */
const INSTANCE_PREFIX = 'partitions.instance.';
const LEASE_PREFIX = 'partitions.lease.';

/** An instance's heartbeat entry, as PartitionLeases writes it. */
export const instanceKey = (id: string) => `${INSTANCE_PREFIX}${id}`;

export class LeaseWatch {
  private readonly lastBeat = new Map<string, number>();
  private readonly owners = new Map<string, string>();
  private readonly report: LeaseReport = { heartbeatGapMs: new Map(), handovers: 0, releases: 0 };
  private readonly done: Promise<void>;

  private constructor(private readonly watcher: QueuedIterator<KvWatchEntry>) {
    this.done = this.run();
  }

  /**
   * Creates the bucket as PartitionLeases does when it is missing, so the watch sees every write;
   * only writes from now on count (not heartbeats the bench announced before).
   */
  static async start(nc: NatsConnection): Promise<LeaseWatch> {
    const kv = await new Kvm(nc).create(PROCESSOR_LEASES_BUCKET, { history: 1, replicas: 1 });
    return new LeaseWatch(await kv.watch({ key: '>', include: KvWatchInclude.UpdatesOnly }));
  }

  private async run(): Promise<void> {
    for await (const e of this.watcher) {
      const at = e.created.getTime();
      if (e.key.startsWith(INSTANCE_PREFIX)) {
        if (e.operation !== 'PUT') continue;
        const id = e.key.slice(INSTANCE_PREFIX.length);
        const last = this.lastBeat.get(id);
        if (last !== undefined) {
          const gap = at - last;
          this.report.heartbeatGapMs.set(id, Math.max(gap, this.report.heartbeatGapMs.get(id) ?? 0));
        }
        this.lastBeat.set(id, at);
      } else if (e.key.startsWith(LEASE_PREFIX)) {
        if (e.operation !== 'PUT') {
          this.report.releases++;
          this.owners.delete(e.key);
          continue;
        }
        const owner = e.json<{ owner?: string }>().owner ?? '';
        const previous = this.owners.get(e.key);
        if (previous !== undefined && previous !== owner) this.report.handovers++;
        this.owners.set(e.key, owner);
      }
    }
  }

  /** Stops watching (before the processors are stopped: their shutdown releases are not news). */
  async stop(): Promise<LeaseReport> {
    this.watcher.stop();
    await this.done;
    return this.report;
  }
}
