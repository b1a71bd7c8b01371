import { AlertMessage, type AlertTransition } from '../../contract/alerts.js';
import { GatewayLiveSummary, PresenceState } from '../../contract/event.js';
import { parseJson, touch } from './bounded.js';

/**
 * The live view's aggregate of the whole fleet: messages per second, latest reading per device,
 * devices reporting and online, firing alerts, dead letters by reason. Pure: no I/O, no timers; the
 * caller feeds it every gateway's once-a-second summary of what it stored (live-summary.ts), alert
 * transitions and presence states (live-source.ts), calls `tick()` about twice a second, and asks for
 * a `delta(cursor)` per client (live-hub.ts).
 *
 * Every structure is bounded (LiveFeedLimits), whatever the fleet size and the number of gateways.
 * Events are never seen one by one: the summaries carry counts and the latest readings of a bounded
 * number of devices per gateway and second.
 *
 * Deltas: every change bumps `version` and stamps what it changed. A client's cursor is the version
 * and the last whole second it was sent; `delta(cursor)` returns only what changed after it, so a
 * client that skipped pushes (slow, see live-hub.ts) gets one coalesced delta, never a backlog.
 */
export interface LiveFeedLimits {
  /** Seconds of per-second history kept and charted. */
  historySeconds: number;
  /** Devices whose latest reading is kept (least recently reporting evicted first). */
  readings: number;
  /** Gateways whose summaries are merged; a summary from one more is ignored until one goes quiet. */
  gateways: number;
  /** A gateway's reporting count stops counting this long after its last summary. */
  gatewayStaleMs: number;
  /** Firing alerts kept (oldest dropped first), and how many of them a message carries. */
  alerts: number;
  alertsSent: number;
  /** Distinct dead-letter reasons and tenants; more are counted under `(other)`. */
  reasons: number;
  tenants: number;
}

export const DEFAULT_LIVE_LIMITS: Readonly<LiveFeedLimits> = Object.freeze({
  historySeconds: 300,
  readings: 500,
  gateways: 1_000,
  gatewayStaleMs: 5_000,
  alerts: 1_000,
  alertsSent: 100,
  reasons: 64,
  tenants: 256,
});

/** Bucket for tenants and reasons past their limit. */
export const OTHER = '(other)';
/** Tenants listed per message, busiest first. */
const TENANTS_SENT = 100;

export type LiveAlert = AlertTransition;

export interface LiveCursor {
  version: number;
  /** Last whole second of history the client has. */
  second: number;
}

export interface LiveReading {
  key: string;
  tenant: string;
  deviceId: string;
  type?: string;
  /** Event time of the reading, ISO. */
  ts?: string;
  /** When its gateway stored it (epoch ms, that gateway's clock). */
  at: number;
  /** [metric, value, unit], the first LIVE_SUMMARY_MAX_METRICS; `more` counts the rest. */
  metrics: [string, number, string][];
  more: number;
}

export interface LiveDeadLetterReason {
  reason: string;
  count: number;
  last?: { tenant: string; deviceId: string; detail: string; receivedAt: string };
}

export interface LiveTenant {
  tenant: string;
  events: number;
  deadletters: number;
  online: number;
  alerts: number;
}

export interface LiveMessage {
  full: boolean;
  now: number;
  totals: { events: number; deadletters: number; alertsFired: number; alertsResolved: number };
  devices: {
    /** The sum of each gateway's count (a device that moved gateways within the window counts twice). */
    reporting: number;
    /** True when a gateway has more devices reporting than it tracks: `reporting` is then a lower bound. */
    reportingCapped: boolean;
    /** From KV `presence`; null while that bucket is not there (no presence owner running). */
    online: number | null;
    readings: number;
  };
  /**
   * Whole seconds up to `end` (epoch s), oldest first, from when the feed started at most
   * historySeconds back; null where no sample was taken.
   */
  series?: {
    end: number;
    events: number[];
    deadletters: number[];
    reporting: (number | null)[];
    online: (number | null)[];
  };
  /** Rows changed since the cursor (all rows when `full`), most recent last. */
  readings?: LiveReading[];
  /** Keys of rows evicted since the cursor. */
  removed?: string[];
  alerts?: { firing: number; list: LiveAlert[] };
  deadletters?: LiveDeadLetterReason[];
  tenants?: LiveTenant[];
}

interface ReadingEntry {
  reading: LiveReading;
  version: number;
}

interface ReasonEntry {
  count: number;
  last: LiveDeadLetterReason['last'];
}

interface GatewayEntry {
  reporting: number;
  capped: boolean;
  /** When its last summary arrived (the feed's clock). */
  heardAt: number;
}

interface TenantEntry {
  events: number;
  deadletters: number;
}

export class LiveFeed {
  readonly limits: Readonly<LiveFeedLimits>;
  private readonly clock: () => number;
  /** History starts here: the seconds before the feed existed are unknown, not zero. */
  private readonly startSecond: number;
  private version = 0;

  // Per-second rings, one slot per second of history; `stamp` says which second a slot holds.
  private readonly stamp: Float64Array;
  private readonly events: Uint32Array;
  private readonly deadletterCounts: Uint32Array;
  private readonly reportingSamples: Float64Array;
  private readonly onlineSamples: Float64Array;

  private readonly readings = new Map<string, ReadingEntry>();
  /** Evicted row keys and the version they went at, so deltas can name them. */
  private readonly evicted = new Map<string, number>();
  /** A cursor older than this missed an eviction no longer listed: it gets a full message. */
  private evictedFloor = 0;

  private readonly gateways = new Map<string, GatewayEntry>();

  private readonly tenantCounts = new Map<string, TenantEntry>();
  private tenantsVersion = 0;
  private readonly reasons = new Map<string, ReasonEntry>();
  private reasonsVersion = 0;
  private readonly alerts = new Map<string, LiveAlert>();
  private alertsVersion = 0;

  private presence = false;
  private readonly online = new Map<string, string>();
  private readonly onlineByTenant = new Map<string, number>();

  private totalEvents = 0;
  private totalDeadletters = 0;
  private alertsFired = 0;
  private alertsResolved = 0;

  constructor(options: { clock?: () => number; limits?: Partial<LiveFeedLimits> } = {}) {
    this.clock = options.clock ?? Date.now;
    this.limits = Object.freeze({ ...DEFAULT_LIVE_LIMITS, ...options.limits });
    this.startSecond = Math.floor(this.clock() / 1000);
    const h = this.limits.historySeconds;
    this.stamp = new Float64Array(h).fill(-1);
    this.events = new Uint32Array(h);
    this.deadletterCounts = new Uint32Array(h);
    this.reportingSamples = new Float64Array(h).fill(Number.NaN);
    this.onlineSamples = new Float64Array(h).fill(Number.NaN);
  }

  /**
   * One gateway's GatewayLiveSummary (core NATS `gateways.live.{gateway}`): its counts go to the
   * second it arrives in, its readings replace the rows of their devices.
   */
  onSummary(data: Uint8Array): void {
    const parsed = GatewayLiveSummary.safeParse(parseJson(data));
    if (!parsed.success) return;
    const summary = parsed.data;
    const now = this.clock();
    if (!this.gateways.has(summary.gateway) && this.gateways.size >= this.limits.gateways) return;
    touch(this.gateways, summary.gateway, {
      reporting: summary.reporting,
      capped: summary.reportingCapped,
      heardAt: now,
    });
    const slot = this.slot(now);
    this.events[slot]! += summary.events;
    this.deadletterCounts[slot]! += summary.deadletters;
    this.totalEvents += summary.events;
    this.totalDeadletters += summary.deadletters;
    this.version += 1;
    if (summary.tenants.length > 0) {
      for (const t of summary.tenants) {
        const entry = this.tenant(t.tenant);
        entry.events += t.events;
        entry.deadletters += t.deadletters;
      }
      this.tenantsVersion = this.version;
    }
    for (const r of summary.reasons) {
      const reason = this.reasons.has(r.reason) || this.reasons.size < this.limits.reasons ? r.reason : OTHER;
      const entry = this.reasons.get(reason);
      if (entry === undefined) this.reasons.set(reason, { count: r.count, last: r.last });
      else {
        entry.count += r.count;
        if (r.last !== undefined) entry.last = r.last;
      }
      this.reasonsVersion = this.version;
    }
    for (const r of summary.readings) this.reading(r);
  }

  /** An alert transition from the processors (core NATS `alerts.{tenant}.{deviceId}`). */
  onAlert(data: Uint8Array): void {
    const parsed = AlertMessage.safeParse(parseJson(data));
    if (!parsed.success) return;
    const alert = parsed.data;
    const key = `${alert.tenant}.${alert.deviceId}.${alert.rule}`;
    if (alert.state === 'firing') {
      this.alertsFired += 1;
      touch(this.alerts, key, alert);
      if (this.alerts.size > this.limits.alerts) this.alerts.delete(this.alerts.keys().next().value!);
    } else {
      this.alertsResolved += 1;
      this.alerts.delete(key);
    }
    this.alertsVersion = ++this.version;
  }

  /**
   * Whether KV `presence` is being watched. Either way the online set starts empty: a (re)started
   * watch replays every key's current state.
   */
  setPresenceAvailable(available: boolean): void {
    this.presence = available;
    this.online.clear();
    this.onlineByTenant.clear();
    this.tenantsVersion = ++this.version;
  }

  /** A KV `presence` entry (key `{tenant}.{deviceId}`); undefined when it was deleted or purged. */
  onPresence(key: string, data: Uint8Array | undefined): void {
    const state = data === undefined ? undefined : PresenceState.safeParse(parseJson(data));
    const nowOnline = state?.success === true && state.data.online;
    const was = this.online.get(key);
    if (nowOnline && was === undefined) {
      const tenant = state.data.tenant;
      this.online.set(key, tenant);
      this.onlineByTenant.set(tenant, (this.onlineByTenant.get(tenant) ?? 0) + 1);
    } else if (!nowOnline && was !== undefined) {
      this.online.delete(key);
      const left = (this.onlineByTenant.get(was) ?? 1) - 1;
      if (left > 0) this.onlineByTenant.set(was, left);
      else this.onlineByTenant.delete(was);
    } else return;
    this.tenantsVersion = ++this.version;
  }

  /** Forgets gateways silent for gatewayStaleMs and samples the device counts for this second. */
  tick(): void {
    const now = this.clock();
    const horizon = now - this.limits.gatewayStaleMs;
    for (const [gateway, g] of this.gateways) {
      if (g.heardAt > horizon) break;
      this.gateways.delete(gateway);
    }
    const slot = this.slot(now);
    this.reportingSamples[slot] = this.reporting().reporting;
    this.onlineSamples[slot] = this.presence ? this.online.size : Number.NaN;
  }

  /** What changed after `cursor` (everything when it is undefined), or undefined when nothing did. */
  delta(cursor?: LiveCursor): { message: LiveMessage; cursor: LiveCursor } | undefined {
    const now = this.clock();
    const lastWhole = Math.floor(now / 1000) - 1;
    const full = cursor === undefined || cursor.version < this.evictedFloor;
    const since = full ? -1 : cursor.version;
    if (!full && since === this.version && lastWhole <= cursor.second) return undefined;

    const h = this.limits.historySeconds;
    const from = Math.max(full ? -1 : cursor.second + 1, lastWhole - h + 1, this.startSecond);
    const reporting = this.reporting();
    const message: LiveMessage = {
      full,
      now,
      totals: {
        events: this.totalEvents,
        deadletters: this.totalDeadletters,
        alertsFired: this.alertsFired,
        alertsResolved: this.alertsResolved,
      },
      devices: {
        reporting: reporting.reporting,
        reportingCapped: reporting.capped,
        online: this.presence ? this.online.size : null,
        readings: this.readings.size,
      },
    };
    if (from <= lastWhole) message.series = this.series(from, lastWhole);

    const readings: LiveReading[] = [];
    for (const entry of this.readings.values()) {
      if (entry.version > since) readings.push(entry.reading);
    }
    if (full || readings.length > 0) message.readings = readings;
    if (!full) {
      const removed = [...this.evicted].filter(([, v]) => v > since).map(([k]) => k);
      if (removed.length > 0) message.removed = removed;
    }
    if (this.alertsVersion > since) {
      const list = [...this.alerts.values()].slice(-this.limits.alertsSent).reverse();
      message.alerts = { firing: this.alerts.size, list };
    }
    if (this.reasonsVersion > since) message.deadletters = this.reasonList();
    if (this.tenantsVersion > since || this.alertsVersion > since) message.tenants = this.tenantList();
    return { message, cursor: { version: this.version, second: Math.max(lastWhole, cursor?.second ?? -1) } };
  }

  private slot(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    const slot = second % this.limits.historySeconds;
    if (this.stamp[slot] !== second) {
      this.stamp[slot] = second;
      this.events[slot] = 0;
      this.deadletterCounts[slot] = 0;
      this.reportingSamples[slot] = Number.NaN;
      this.onlineSamples[slot] = Number.NaN;
    }
    return slot;
  }

  private series(from: number, to: number): NonNullable<LiveMessage['series']> {
    const out: NonNullable<LiveMessage['series']> = {
      end: to,
      events: [],
      deadletters: [],
      reporting: [],
      online: [],
    };
    const sample = (v: number) => (Number.isNaN(v) ? null : v);
    for (let s = from; s <= to; s++) {
      const slot = s % this.limits.historySeconds;
      const here = this.stamp[slot] === s;
      out.events.push(here ? this.events[slot]! : 0);
      out.deadletters.push(here ? this.deadletterCounts[slot]! : 0);
      out.reporting.push(here ? sample(this.reportingSamples[slot]!) : null);
      out.online.push(here ? sample(this.onlineSamples[slot]!) : null);
    }
    return out;
  }

  private tenant(name: string): TenantEntry {
    let entry = this.tenantCounts.get(name);
    if (entry === undefined) {
      // The `(other)` bucket comes on top of the limit.
      const key = this.tenantCounts.size >= this.limits.tenants ? OTHER : name;
      entry = this.tenantCounts.get(key) ?? { events: 0, deadletters: 0 };
      this.tenantCounts.set(key, entry);
    }
    return entry;
  }

  private reading(r: GatewayLiveSummary['readings'][number]): void {
    const key = `${r.tenant}.${r.deviceId}`;
    const reading: LiveReading = {
      key,
      tenant: r.tenant,
      deviceId: r.deviceId,
      ...(r.type !== undefined ? { type: r.type } : {}),
      ...(r.ts !== undefined ? { ts: r.ts } : {}),
      at: r.atMs,
      metrics: r.metrics,
      more: r.more,
    };
    touch(this.readings, key, { reading, version: this.version });
    this.evicted.delete(key);
    if (this.readings.size > this.limits.readings) {
      const oldest = this.readings.keys().next().value!;
      this.readings.delete(oldest);
      this.evicted.set(oldest, this.version);
      if (this.evicted.size > this.limits.readings) {
        const [gone, at] = this.evicted.entries().next().value!;
        this.evicted.delete(gone);
        this.evictedFloor = at;
      }
    }
  }

  /** Devices reporting, summed over the gateways heard from within gatewayStaleMs. */
  private reporting(): { reporting: number; capped: boolean } {
    let reporting = 0;
    let capped = false;
    for (const g of this.gateways.values()) {
      reporting += g.reporting;
      capped ||= g.capped;
    }
    return { reporting, capped };
  }

  private reasonList(): LiveDeadLetterReason[] {
    const out: LiveDeadLetterReason[] = [];
    for (const [reason, entry] of this.reasons) {
      out.push({ reason, count: entry.count, ...(entry.last ? { last: entry.last } : {}) });
    }
    return out.sort((a, b) => b.count - a.count);
  }

  private tenantList(): LiveTenant[] {
    const alerts = new Map<string, number>();
    for (const a of this.alerts.values()) alerts.set(a.tenant, (alerts.get(a.tenant) ?? 0) + 1);
    const names = new Set([...this.tenantCounts.keys(), ...this.onlineByTenant.keys(), ...alerts.keys()]);
    return [...names]
      .map((tenant) => ({
        tenant,
        events: this.tenantCounts.get(tenant)?.events ?? 0,
        deadletters: this.tenantCounts.get(tenant)?.deadletters ?? 0,
        online: this.onlineByTenant.get(tenant) ?? 0,
        alerts: alerts.get(tenant) ?? 0,
      }))
      .sort((a, b) => b.events - a.events || a.tenant.localeCompare(b.tenant))
      .slice(0, TENANTS_SENT);
  }
}
