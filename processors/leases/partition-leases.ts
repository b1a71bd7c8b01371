import { performance } from 'node:perf_hooks';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { type KV, type KvEntry, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { PROCESSOR_LEASES_BUCKET } from '../../contract/subjects.js';

/**
 * Running processor instances share the partitions through leases in a KV bucket.
 *
 * Each round (every `ttlMs / 3`), an instance: refreshes its heartbeat `{group}.instance.{id}`; renews
 * the leases `{group}.lease.{p}` it holds (compare-and-set on the entry's revision, so a lease someone else has
 * taken cannot be renewed by mistake); releases leases above its fair share, ceil(partitions / live
 * instances), so a new instance gets work; and claims free or expired leases up to its share.
 * A killed instance stops renewing, its leases expire after `ttlMs` and are claimed by the others on
 * their next round: takeover within ttl + one round. A renewal the bucket cannot answer (its leader
 * being elected after a NATS node was lost) is not a lease lost: the lease is kept until less than a
 * round is left of it, and only a compare-and-set refused because someone else wrote it loses it.
 *
 * Expiry compares the holder's `expiresAt` with the reader's clock, so hosts need synchronised
 * clocks (NTP: milliseconds against a ttl of seconds). The clock is injected for tests.
 *
 * `onAcquire` runs before a partition counts as owned; `onRelease` runs before the lease is given
 * up, so the consumer has stopped and checkpointed before anyone else starts on the partition.
 */
export interface LeaseOptions {
  instanceId: string;
  /**
   * Which kind of work the leases are for (`partitions`, `roles`): each group has its own leases,
   * heartbeats and fair share.
   */
  group: string;
  partitions: number;
  ttlMs: number;
  clock?: () => number;
  log: Logger;
  onAcquire: (partition: number) => Promise<void> | void;
  onRelease: (partition: number, reason: 'rebalance' | 'lost' | 'shutdown') => Promise<void> | void;
  /**
   * After each completed round: how long it took, and the time since the previous one completed
   * (undefined for the first). Both on the monotonic clock, not `clock`: they measure this process.
   */
  onRound?: (round: LeaseRound) => void;
}

export interface LeaseRound {
  durationMs: number;
  gapMs: number | undefined;
}

interface LeaseValue {
  owner: string;
  expiresAt: number;
}

function decode(entry: KvEntry | null): (LeaseValue & { revision: number }) | undefined {
  if (entry?.operation !== 'PUT') return undefined;
  try {
    const value = entry.json<LeaseValue>();
    return typeof value.owner === 'string' && typeof value.expiresAt === 'number'
      ? { ...value, revision: entry.revision }
      : undefined;
  } catch {
    return undefined;
  }
}

export class PartitionLeases {
  private readonly owned = new Map<number, number>(); // partition → revision of our lease
  private readonly expiresAt = new Map<number, number>(); // partition → expiry we last wrote
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private lastRoundEnd: number | undefined;
  private stopped = false;
  private readonly leaseKey: (p: number) => string;
  private readonly instanceKey: (id: string) => string;

  private constructor(
    private readonly kv: KV,
    private readonly options: LeaseOptions,
  ) {
    this.clock = options.clock ?? Date.now;
    this.leaseKey = (p) => `${options.group}.lease.${p}`;
    this.instanceKey = (id) => `${options.group}.instance.${id}`;
  }

  static async open(nc: NatsConnection, options: LeaseOptions, replicas = 1): Promise<PartitionLeases> {
    const kv = await new Kvm(nc).create(PROCESSOR_LEASES_BUCKET, { history: 1, replicas });
    return new PartitionLeases(kv, options);
  }

  /** Partitions this instance holds, ascending. */
  get partitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  /** Time between rounds: ttl/3. */
  private get roundMs(): number {
    return Math.max(100, Math.floor(this.options.ttlMs / 3));
  }

  /** Runs rounds every ttl/3 until stop(). */
  start(): void {
    const loop = () => {
      this.timer = setTimeout(async () => {
        await this.rebalance();
        if (!this.stopped) loop();
      }, this.roundMs);
    };
    void this.rebalance().then(() => !this.stopped && loop());
  }

  /** One round of heartbeat, renew, release and claim. Never throws: a failed round is logged. */
  rebalance(): Promise<void> {
    this.round ??= this.doRound().finally(() => {
      this.round = undefined;
    });
    return this.round;
  }

  /** Stops the rounds and gives every lease back (after onRelease), so others take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round;
    for (const p of this.partitions) await this.release(p, 'shutdown');
    await this.kv.delete(this.instanceKey(this.options.instanceId)).catch(() => undefined);
  }

  private async doRound(): Promise<void> {
    if (this.stopped) return;
    const { instanceId, partitions, ttlMs, log } = this.options;
    const startedAt = performance.now();
    try {
      const now = this.clock();
      // Heartbeat and renewals first, all at once: under load each KV reply can wait a while for
      // this busy event loop, and a round must stay well inside the TTL. A compare-and-set on the
      // revision we wrote last succeeds only if nobody wrote the lease since: no read needed.
      const held = this.partitions;
      const [, ...renewals] = await Promise.all([
        // A failed heartbeat must not lose the renewals' new revisions: logged, retried next round.
        this.kv
          .put(this.instanceKey(instanceId), JSON.stringify({ expiresAt: now + ttlMs }))
          .catch((err: unknown) => log.warn({ err }, 'lease heartbeat not written')),
        ...held.map((p) => this.renew(p, now)),
      ]);
      for (const [i, p] of held.entries()) {
        const renewed = renewals[i]!;
        if (typeof renewed === 'number') {
          this.owned.set(p, renewed);
          this.expiresAt.set(p, now + ttlMs);
          continue;
        }
        // Unanswered, the lease still runs until the expiry we wrote; stop while a round is left,
        // so that nobody claims it while this instance still consumes.
        const left = (this.expiresAt.get(p) ?? 0) - now;
        if (renewed === 'unavailable' && left > this.roundMs) {
          log.warn({ partition: p, leftMs: left }, 'lease not renewed (KV unavailable); kept for now');
          continue;
        }
        log.warn({ partition: p }, renewed === 'taken' ? 'lease lost to another instance' : 'lease expired');
        this.owned.delete(p);
        this.expiresAt.delete(p);
        await this.options.onRelease(p, 'lost');
      }

      const live = await this.liveInstances(now);
      const share = Math.ceil(partitions / Math.max(1, live));
      for (const p of this.partitions.reverse().slice(0, Math.max(0, this.owned.size - share))) {
        await this.release(p, 'rebalance');
      }

      if (this.owned.size < share) await this.claim(now, share);
      const endedAt = performance.now();
      const gapMs = this.lastRoundEnd === undefined ? undefined : endedAt - this.lastRoundEnd;
      this.lastRoundEnd = endedAt;
      this.options.onRound?.({ durationMs: endedAt - startedAt, gapMs });
    } catch (err) {
      log.warn({ err }, 'lease round failed; retrying next round');
    }
  }

  /** Claims free or expired leases until this instance holds its share. */
  private async claim(now: number, share: number): Promise<void> {
    const { partitions, ttlMs, log } = this.options;
    const others = Array.from({ length: partitions }, (_, p) => p).filter((p) => !this.owned.has(p));
    const leases = await Promise.all(others.map(async (p) => decode(await this.kv.get(this.leaseKey(p)))));
    for (const [i, p] of others.entries()) {
      if (this.owned.size >= share || this.stopped) break;
      const current = leases[i];
      if (current && current.expiresAt > now) continue;
      const revision = await this.write(p, now, current?.revision);
      if (revision === undefined) continue; // someone else was quicker
      try {
        await this.options.onAcquire(p);
        this.owned.set(p, revision);
        this.expiresAt.set(p, now + ttlMs);
        log.info({ partition: p, from: current?.owner }, 'partition acquired');
      } catch (err) {
        log.error({ partition: p, err }, 'could not start on an acquired partition: giving it back');
        await this.kv.delete(this.leaseKey(p), { previousSeq: revision }).catch(() => undefined);
      }
    }
  }

  private async liveInstances(now: number): Promise<number> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys(`${this.options.group}.instance.*`)) keys.push(key);
    const entries = await Promise.all(keys.map((key) => this.kv.get(key)));
    let live = 0;
    for (const entry of entries) {
      const value =
        entry?.operation === 'PUT' ? (entry.json<{ expiresAt: number }>() ?? undefined) : undefined;
      if (value && value.expiresAt > now) live++;
    }
    return live;
  }

  /** Writes our lease with compare-and-set; returns the new revision, or undefined if it lost the race. */
  private async write(p: number, now: number, revision: number | undefined): Promise<number | undefined> {
    const value = JSON.stringify({ owner: this.options.instanceId, expiresAt: now + this.options.ttlMs });
    try {
      return revision === undefined
        ? await this.kv.create(this.leaseKey(p), value)
        : await this.kv.update(this.leaseKey(p), value, revision);
    } catch {
      return undefined;
    }
  }

  /** Renews our lease with compare-and-set: the new revision, or why not. */
  private async renew(p: number, now: number): Promise<number | 'taken' | 'unavailable'> {
    const value = JSON.stringify({ owner: this.options.instanceId, expiresAt: now + this.options.ttlMs });
    try {
      return await this.kv.update(this.leaseKey(p), value, this.owned.get(p)!);
    } catch (err) {
      const conflict =
        err instanceof JetStreamApiError &&
        (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
          err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
      return conflict ? 'taken' : 'unavailable';
    }
  }

  private async release(p: number, reason: 'rebalance' | 'shutdown'): Promise<void> {
    const revision = this.owned.get(p);
    this.owned.delete(p);
    this.expiresAt.delete(p);
    try {
      await this.options.onRelease(p, reason);
    } finally {
      if (revision !== undefined)
        await this.kv.delete(this.leaseKey(p), { previousSeq: revision }).catch(() => undefined);
      this.options.log.info({ partition: p, reason }, 'partition released');
    }
  }
}
