import { performance } from 'node:perf_hooks';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { type KV, type KvEntry, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { PROCESSOR_LEASES_BUCKET } from '../../contract/subjects.js';

/**
 * Running processor instances share the partitions through leases in a KV bucket.
 *
 * Every `ttlMs / 4`, at a fixed rate, an instance renews: it refreshes its heartbeat
 * `{group}.instance.{id}` and renews the leases `{group}.lease.{p}` it holds, all in one batch
 * (compare-and-set on the entry's revision, so a lease someone else has taken cannot be renewed by
 * mistake). After each renewal it rebalances: releases leases above its fair share,
 * ceil(partitions / live instances), so a new instance gets work, and claims free or expired leases
 * up to its share. Rebalancing waits for `onAcquire` and `onRelease` (a consumer starting or stopping
 * can take seconds under load) but the renewals never wait for it: a partition being started or
 * stopped is renewed like the others. Under load those waits used to delay the next round by their
 * whole length, past the TTL, and partitions changed hands while their owner was alive.
 *
 * A killed instance stops renewing, its leases expire after `ttlMs` and are claimed by the others on
 * their next round: takeover within ttl + one round. A renewal the bucket cannot answer (its leader
 * being elected after a NATS node was lost) is not a lease lost: the lease is kept until less than a
 * round is left of it, and only a compare-and-set refused because someone else wrote it loses it.
 * While `holderAlive` says no (the thread doing the work cannot show it runs), nothing is renewed or
 * claimed: the leases run out and others take them, as if this instance had been killed.
 *
 * Expiry compares the holder's `expiresAt` with the reader's clock, so hosts need synchronised
 * clocks (NTP: milliseconds against a ttl of seconds). The clock is injected for tests.
 *
 * `onAcquire` runs before a partition counts as owned; `onRelease` runs before the lease is given
 * up, so the consumer has stopped and checkpointed before anyone else starts on the partition.
 * `onExpiry` follows every change of the expiry written (0 when the lease is not held any more),
 * before `onAcquire` and until `onRelease` is done, so the work can check it still holds a lease.
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
  /** The lease on `partition` now runs until `expiresAt` (`clock` time); 0 when no longer held. */
  onExpiry?: (partition: number, expiresAt: number) => void;
  /** False while the work cannot show it is alive: no renewals, no claims. Always alive if unset. */
  holderAlive?: () => boolean;
  /**
   * After each completed renewal (heartbeat and renewals): how long it took, and the time since the
   * previous one completed (undefined for the first). Both on the monotonic clock, not `clock`: they
   * measure this process.
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

/** A lease this instance wrote: being started on, owned, or being given up. */
interface Held {
  revision: number;
  expiresAt: number;
  state: 'starting' | 'owned' | 'releasing';
}

export class PartitionLeases {
  private readonly held = new Map<number, Held>();
  /** Partitions whose onRelease('lost') still runs: not claimed again until it is done. */
  private readonly losing = new Map<number, Promise<void>>();
  private readonly clock: () => number;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private rebalancing: Promise<void> | undefined;
  /** Writes to our own leases one batch at a time, so a renewal and a release never race on a revision. */
  private kvQueue: Promise<unknown> = Promise.resolve();
  private lastRenewalEnd: number | undefined;
  private silentLogged = false;
  /** No more claims or rebalancing (stop() was called); renewals go on until every lease is released. */
  private stopped = false;
  private ended = false;
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

  /** Partitions this instance holds (onAcquire done, onRelease not begun), ascending. */
  get partitions(): number[] {
    return [...this.held.entries()]
      .filter(([, h]) => h.state === 'owned')
      .map(([p]) => p)
      .sort((a, b) => a - b);
  }

  /**
   * Time between renewals: ttl/4. A round may then slip by ttl/12 and still complete within ttl/3 of
   * the previous one, which is what a lease round is held to under load (README, Scaling the
   * processors); at ttl/3 any slip at all was past it.
   */
  private get roundMs(): number {
    return Math.max(100, Math.floor(this.options.ttlMs / 4));
  }

  /** Renews every ttl/4, at a fixed rate, and rebalances after each renewal, until stop(). */
  start(): void {
    let next = performance.now();
    const tick = () => {
      if (this.ended) return;
      // A renewal still unanswered (the bucket electing a leader) is not doubled: the next slot waits.
      this.renewing ??= this.renew().finally(() => {
        this.renewing = undefined;
      });
      if (!this.stopped) {
        this.rebalancing ??= this.renewing
          .then(() => this.doRebalance())
          .finally(() => {
            this.rebalancing = undefined;
          });
      }
      next += this.roundMs;
      const now = performance.now();
      // Late (a stalled thread): the missed slots are not made up in a burst, the next is one round on.
      if (next < now) next = now + this.roundMs;
      this.renewTimer = setTimeout(tick, next - now);
    };
    tick();
  }

  /**
   * One whole round: renew, then rebalance, then wait for what those started (lost partitions'
   * onRelease). Never throws: a failed round is logged. For tests and for the first round; start()
   * runs rounds on its own.
   */
  async rebalance(): Promise<void> {
    await (this.renewing ?? this.renew());
    await (this.rebalancing ?? this.doRebalance());
    await Promise.all(this.losing.values());
  }

  /** Stops claiming, gives every lease back (after onRelease), so others take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.rebalancing;
    // Renewals go on meanwhile: stopping a consumer may take a while, and its lease must not lapse.
    for (const p of this.partitions) await this.release(p, 'shutdown');
    await Promise.all(this.losing.values());
    this.ended = true;
    clearTimeout(this.renewTimer);
    await this.renewing;
    await this.kv.delete(this.instanceKey(this.options.instanceId)).catch(() => undefined);
  }

  private alive(): boolean {
    const alive = this.options.holderAlive?.() ?? true;
    if (!alive && !this.silentLogged) {
      this.options.log.warn('lease holder silent: leases not renewed and let run out');
    }
    this.silentLogged = !alive;
    return alive;
  }

  /** One KV batch at a time on our own leases (see kvQueue). */
  private withKv<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.kvQueue.then(fn);
    this.kvQueue = run.catch(() => undefined);
    return run;
  }

  private setExpiry(p: number, expiresAt: number): void {
    this.options.onExpiry?.(p, expiresAt);
  }

  /** Heartbeat and every held lease renewed, in one batch. Never throws. */
  private async renew(): Promise<void> {
    if (this.ended || !this.alive()) return;
    const { instanceId, ttlMs, log } = this.options;
    const startedAt = performance.now();
    try {
      const lost = await this.withKv(async () => {
        const now = this.clock();
        const held = [...this.held.entries()];
        // A compare-and-set on the revision we wrote last succeeds only if nobody wrote the lease
        // since: no read needed.
        const [, ...renewals] = await Promise.all([
          // A failed heartbeat must not lose the renewals' new revisions: logged, retried next round.
          this.kv
            .put(this.instanceKey(instanceId), JSON.stringify({ expiresAt: now + ttlMs }))
            .catch((err: unknown) => log.warn({ err }, 'lease heartbeat not written')),
          ...held.map(([p, h]) => this.update(p, now, h.revision)),
        ]);
        const lost: Array<[number, Held]> = [];
        for (const [i, [p, h]] of held.entries()) {
          const renewed = renewals[i]!;
          if (typeof renewed === 'number') {
            h.revision = renewed;
            h.expiresAt = now + ttlMs;
            this.setExpiry(p, h.expiresAt);
            continue;
          }
          // Unanswered, the lease still runs until the expiry we wrote; stop while a round is left,
          // so that nobody claims it while this instance still consumes.
          const left = h.expiresAt - now;
          if (renewed === 'unavailable' && left > this.roundMs) {
            log.warn({ partition: p, leftMs: left }, 'lease not renewed (KV unavailable); kept for now');
            continue;
          }
          log.warn(
            { partition: p },
            renewed === 'taken' ? 'lease lost to another instance' : 'lease expired',
          );
          this.held.delete(p);
          this.setExpiry(p, 0);
          lost.push([p, h]);
        }
        return lost;
      });
      // A partition still starting is stopped by claim(), one being released by release().
      for (const [p, h] of lost) if (h.state === 'owned') this.lose(p);
      const endedAt = performance.now();
      const gapMs = this.lastRenewalEnd === undefined ? undefined : endedAt - this.lastRenewalEnd;
      this.lastRenewalEnd = endedAt;
      this.options.onRound?.({ durationMs: endedAt - startedAt, gapMs });
    } catch (err) {
      log.warn({ err }, 'lease renewal failed; retrying next round');
    }
  }

  /** onRelease('lost'), not awaited by the renewals; the partition is not claimed again until done. */
  private lose(p: number): void {
    const done = Promise.resolve()
      .then(() => this.options.onRelease(p, 'lost'))
      .catch((err: unknown) =>
        this.options.log.error({ partition: p, err }, 'could not stop a lost partition'),
      )
      .finally(() => this.losing.delete(p));
    this.losing.set(p, done);
  }

  /** Releases what is above the fair share, claims up to it. Never throws. */
  private async doRebalance(): Promise<void> {
    if (this.stopped || !this.alive()) return;
    const { partitions, log } = this.options;
    try {
      const live = await this.liveInstances(this.clock());
      const share = Math.ceil(partitions / Math.max(1, live));
      const owned = this.partitions;
      const count = () => [...this.held.values()].filter((h) => h.state !== 'releasing').length;
      for (const p of owned.reverse().slice(0, Math.max(0, count() - share))) {
        if (this.stopped) return;
        await this.release(p, 'rebalance');
      }
      if (count() < share) await this.claim(share, count);
    } catch (err) {
      log.warn({ err }, 'lease rebalancing failed; retrying next round');
    }
  }

  /** Claims free or expired leases until this instance holds its share. */
  private async claim(share: number, count: () => number): Promise<void> {
    const { partitions, ttlMs, log } = this.options;
    const others = Array.from({ length: partitions }, (_, p) => p).filter(
      (p) => !this.held.has(p) && !this.losing.has(p),
    );
    const leases = await Promise.all(others.map(async (p) => decode(await this.kv.get(this.leaseKey(p)))));
    // One line per round, not one per partition: a first start takes all of them at once.
    const acquired: number[] = [];
    const from = new Set<string>();
    for (const [i, p] of others.entries()) {
      if (count() >= share || this.stopped || !this.alive()) break;
      const current = leases[i];
      if (current && current.expiresAt > this.clock()) continue;
      const h = await this.withKv(async (): Promise<Held | undefined> => {
        // The expiry counts from the write, not from the start of the round.
        const now = this.clock();
        const revision = await this.write(p, now, current?.revision);
        if (revision === undefined) return undefined; // someone else was quicker
        const h: Held = { revision, expiresAt: now + ttlMs, state: 'starting' };
        this.held.set(p, h);
        this.setExpiry(p, h.expiresAt);
        return h;
      });
      if (!h) continue;
      try {
        await this.options.onAcquire(p);
      } catch (err) {
        log.error({ partition: p, err }, 'could not start on an acquired partition: giving it back');
        await this.giveBack(p, h);
        continue;
      }
      if (this.held.get(p) !== h) {
        // Lost while starting (its renewal refused, or the holder went silent past its expiry).
        await this.options.onRelease(p, 'lost');
        continue;
      }
      h.state = 'owned';
      acquired.push(p);
      if (current?.owner !== undefined) from.add(current.owner);
    }
    if (acquired.length > 0)
      log.info(
        { partitions: acquired, ...(from.size > 0 ? { from: [...from] } : {}) },
        'partitions acquired',
      );
  }

  /** Deletes our lease, if it is still ours as we last wrote it. */
  private giveBack(p: number, h: Held): Promise<void> {
    return this.withKv(async () => {
      if (this.held.get(p) !== h) return;
      this.held.delete(p);
      this.setExpiry(p, 0);
      await this.kv.delete(this.leaseKey(p), { previousSeq: h.revision }).catch(() => undefined);
    });
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
  private async update(p: number, now: number, revision: number): Promise<number | 'taken' | 'unavailable'> {
    const value = JSON.stringify({ owner: this.options.instanceId, expiresAt: now + this.options.ttlMs });
    try {
      return await this.kv.update(this.leaseKey(p), value, revision);
    } catch (err) {
      const conflict =
        err instanceof JetStreamApiError &&
        (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
          err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
      return conflict ? 'taken' : 'unavailable';
    }
  }

  /** onRelease while the lease is still renewed, then the lease deleted so others take it at once. */
  private async release(p: number, reason: 'rebalance' | 'shutdown'): Promise<void> {
    const h = this.held.get(p);
    if (h?.state !== 'owned') return;
    h.state = 'releasing';
    try {
      await this.options.onRelease(p, reason);
    } finally {
      await this.giveBack(p, h);
      this.options.log.info({ partition: p, reason }, 'partition released');
    }
  }
}
