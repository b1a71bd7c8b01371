import { AlertMessage, type AlertTransition } from '../../contract/alerts.js';
import { CanonicalEvent, DeadLetter, PresenceState } from '../../contract/event.js';
import { DEADLETTER_PREFIX, TELEMETRY_PREFIX } from '../../contract/subjects.js';

/**
 * The live view's aggregate of what crosses NATS: messages per second, latest reading per device,
 * devices reporting and online, firing alerts, dead letters by reason. Pure: no I/O, no timers; the
 * caller feeds it messages (live-source.ts), calls `tick()` about twice a second, and asks for a
 * `delta(cursor)` per client (live-hub.ts).
 *
 * Every structure is bounded (LiveFeedLimits), whatever the fleet size. Per message the cost is a
 * subject split and a few map updates: telemetry payloads are kept as bytes and parsed only when a
 * client is sent that device's row, at most once per change.
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
  /** A device counts as reporting this long after its last reading. */
  reportingWindowMs: number;
  /** Devices tracked for the reporting count; beyond it the count is a lower bound. */
  reportingTracked: number;
  /** Firing alerts kept (oldest dropped first), and how many of them a message carries. */
  alerts: number;
  alertsSent: number;
  /** Distinct dead-letter reasons and tenants; more are counted under `(other)`. */
  reasons: number;
  tenants: number;
  /** Metrics shown per reading (a reading may carry 256). */
  metricsPerReading: number;
}

export const DEFAULT_LIVE_LIMITS: Readonly<LiveFeedLimits> = Object.freeze({
  historySeconds: 300,
  readings: 500,
  reportingWindowMs: 60_000,
  reportingTracked: 100_000,
  alerts: 1_000,
  alertsSent: 100,
  reasons: 64,
  tenants: 256,
  metricsPerReading: 12,
});

/** Bucket for tenants and reasons past their limit. */
export const OTHER = '(other)';
/** Dead-letter details are free text from the validators; a table cell needs only the start. */
const DETAIL_MAX_CHARS = 200;
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
  /** When it crossed NATS (epoch ms, the feed's clock). */
  at: number;
  /** [metric, value, unit], the first metricsPerReading; `more` counts the rest. */
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
    reporting: number;
    /** True when more devices report than are tracked: `reporting` is then a lower bound. */
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
  tenant: string;
  deviceId: string;
  raw: Uint8Array;
  at: number;
  version: number;
  parsed: LiveReading | undefined;
}

interface ReasonEntry {
  count: number;
  raw: Uint8Array | undefined;
  last: LiveDeadLetterReason['last'];
  parsedVersion: number;
  version: number;
}

interface TenantEntry {
  events: number;
  deadletters: number;
}

const decoder = new TextDecoder();

function parseJson(raw: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(raw));
  } catch {
    return undefined;
  }
}

/** Moves `key` to the most recent end of an insertion-ordered map. */
function touch<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
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

  private readonly lastSeen = new Map<string, number>();
  private reportingCapped = false;

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

  /** A canonical event on `telemetry.{partition}.{tenant}.{deviceId}`; `data` must not be reused by the caller. */
  onTelemetry(subject: string, data: Uint8Array): void {
    const parts = subject.split('.');
    if (parts.length !== 4 || parts[0] !== TELEMETRY_PREFIX) return;
    const tenant = parts[2]!;
    const deviceId = parts[3]!;
    const key = `${tenant}.${deviceId}`;
    const now = this.clock();
    this.events[this.slot(now)]! += 1;
    this.totalEvents += 1;
    this.tenant(tenant).events += 1;
    this.tenantsVersion = ++this.version;

    touch(this.lastSeen, key, now);
    if (this.lastSeen.size > this.limits.reportingTracked) {
      this.lastSeen.delete(this.lastSeen.keys().next().value!);
      this.reportingCapped = true;
    }

    touch(this.readings, key, {
      tenant,
      deviceId,
      raw: data,
      at: now,
      version: this.version,
      parsed: undefined,
    });
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

  /** A dead letter on `deadletter.{tenant}.{reason}`; `data` must not be reused by the caller. */
  onDeadLetter(subject: string, data: Uint8Array): void {
    const parts = subject.split('.');
    if (parts.length !== 3 || parts[0] !== DEADLETTER_PREFIX) return;
    const now = this.clock();
    this.deadletterCounts[this.slot(now)]! += 1;
    this.totalDeadletters += 1;
    this.tenant(parts[1]!).deadletters += 1;
    this.tenantsVersion = ++this.version;
    let reason = parts[2]!;
    if (!this.reasons.has(reason) && this.reasons.size >= this.limits.reasons) reason = OTHER;
    let entry = this.reasons.get(reason);
    if (entry === undefined) {
      entry = { count: 0, raw: undefined, last: undefined, parsedVersion: 0, version: 0 };
      this.reasons.set(reason, entry);
    }
    entry.count += 1;
    entry.raw = data;
    entry.version = this.version;
    this.reasonsVersion = this.version;
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

  /** Forgets devices silent for reportingWindowMs and samples the device counts for this second. */
  tick(): void {
    const now = this.clock();
    const horizon = now - this.limits.reportingWindowMs;
    for (const [key, seen] of this.lastSeen) {
      if (seen > horizon) break;
      this.lastSeen.delete(key);
    }
    if (this.lastSeen.size < this.limits.reportingTracked) this.reportingCapped = false;
    const slot = this.slot(now);
    this.reportingSamples[slot] = this.lastSeen.size;
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
        reporting: this.lastSeen.size,
        reportingCapped: this.reportingCapped,
        online: this.presence ? this.online.size : null,
        readings: this.readings.size,
      },
    };
    if (from <= lastWhole) message.series = this.series(from, lastWhole);

    const readings: LiveReading[] = [];
    for (const [key, entry] of this.readings) {
      if (entry.version > since) readings.push(this.readingOf(key, entry));
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

  private readingOf(key: string, entry: ReadingEntry): LiveReading {
    if (entry.parsed !== undefined) return entry.parsed;
    const reading: LiveReading = {
      key,
      tenant: entry.tenant,
      deviceId: entry.deviceId,
      at: entry.at,
      metrics: [],
      more: 0,
    };
    const event = CanonicalEvent.safeParse(parseJson(entry.raw));
    if (event.success) {
      reading.ts = event.data.ts;
      if (event.data.labels.type !== undefined) reading.type = event.data.labels.type;
      const metrics = Object.entries(event.data.metrics);
      reading.metrics = metrics
        .slice(0, this.limits.metricsPerReading)
        .map(([name, m]) => [name, m.value, m.unit] as [string, number, string]);
      reading.more = Math.max(0, metrics.length - this.limits.metricsPerReading);
    }
    entry.parsed = reading;
    return reading;
  }

  private reasonList(): LiveDeadLetterReason[] {
    const out: LiveDeadLetterReason[] = [];
    for (const [reason, entry] of this.reasons) {
      if (entry.raw !== undefined && entry.parsedVersion !== entry.version) {
        const letter = DeadLetter.safeParse(parseJson(entry.raw));
        if (letter.success) {
          const { tenant, deviceId, detail, receivedAt } = letter.data;
          entry.last = { tenant, deviceId, detail: detail.slice(0, DETAIL_MAX_CHARS), receivedAt };
        }
        entry.parsedVersion = entry.version;
        // Parsed once: the bytes (up to DEADLETTER_MAX_PAYLOAD_BYTES of payload) need not stay.
        entry.raw = undefined;
      }
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
