import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import {
  CanonicalEvent,
  DeadLetter,
  type GatewayLiveSummary,
  LIVE_SUMMARY_DETAIL_MAX_CHARS,
  LIVE_SUMMARY_MAX_METRICS,
  LIVE_SUMMARY_MAX_READINGS,
  LIVE_SUMMARY_MAX_REASONS,
  LIVE_SUMMARY_MAX_TENANTS,
} from '../../contract/event.js';
import { DEADLETTER_PREFIX, gatewayLiveSubject, TELEMETRY_PREFIX } from '../../contract/subjects.js';
import { parseJson, touch } from './bounded.js';

/**
 * What this gateway stored, summarised for the live views (its own and every other gateway's): each
 * event and dead letter it stored is counted here (a subject split and a few map updates, no parse),
 * and `take()`, about once a second, turns the interval into one GatewayLiveSummary and starts the
 * next. Only then are payloads parsed: the latest reading of at most `readings` devices, the last
 * letter of each reason. Every structure is bounded, whatever the fleet and the rate.
 *
 * This replaces each live view subscribing to every event of the fleet (`telemetry.>`), which cost
 * nats-server one more delivery of every event per gateway (README, Performance).
 */
export interface LiveSummaryLimits {
  /** Devices whose latest reading one summary carries (the most recent of the interval). */
  readings: number;
  /** A device counts as reporting this long after its last reading. */
  reportingWindowMs: number;
  /** Devices tracked for the reporting count; beyond it the count is a lower bound. */
  reportingTracked: number;
  /** Distinct tenants and dead-letter reasons per summary; more are counted under `(other)`. */
  tenants: number;
  reasons: number;
  /** Metrics shown per reading (a reading may carry 256). */
  metricsPerReading: number;
}

export const DEFAULT_LIVE_SUMMARY_LIMITS: Readonly<LiveSummaryLimits> = Object.freeze({
  readings: LIVE_SUMMARY_MAX_READINGS,
  reportingWindowMs: 60_000,
  reportingTracked: 100_000,
  tenants: LIVE_SUMMARY_MAX_TENANTS,
  reasons: LIVE_SUMMARY_MAX_REASONS,
  metricsPerReading: LIVE_SUMMARY_MAX_METRICS,
});

export const LIVE_SUMMARY_INTERVAL_MS = 1_000;

/** Bucket for tenants and reasons past their limit. */
export const OTHER = '(other)';

const TELEMETRY_DOT = `${TELEMETRY_PREFIX}.`;

interface Changed {
  /** `telemetry.{partition}.{tenant}.{deviceId}`: tenant and device are read from it when summarised. */
  subject: string;
  raw: Uint8Array;
  atMs: number;
}

interface Reason {
  count: number;
  raw: Uint8Array;
}

export class LiveSummarizer {
  readonly limits: Readonly<LiveSummaryLimits>;
  readonly gatewayId: string;
  private readonly clock: () => number;
  private since: number;
  private events = 0;
  private deadletters = 0;
  private readonly changed = new Map<string, Changed>();
  private leftOut = 0;
  private readonly tenants = new Map<string, { events: number; deadletters: number }>();
  private readonly reasons = new Map<string, Reason>();
  private readonly lastSeen = new Map<string, number>();
  private reportingCapped = false;

  constructor(options: { gatewayId: string; clock?: () => number; limits?: Partial<LiveSummaryLimits> }) {
    this.gatewayId = options.gatewayId;
    this.clock = options.clock ?? Date.now;
    this.limits = Object.freeze({ ...DEFAULT_LIVE_SUMMARY_LIMITS, ...options.limits });
    this.since = this.clock();
  }

  /**
   * A message this gateway stored: a canonical event on `telemetry.{partition}.{tenant}.{deviceId}` or
   * a dead letter on `deadletter.{tenant}.{reason}`; others are ignored. `data` must not be reused.
   */
  onStored(subject: string, data: Uint8Array): void {
    // Once per stored event: no split, and the subject itself (one string per device connection,
    // its hash computed once) is the device's key.
    if (subject.startsWith(TELEMETRY_DOT)) {
      const tenantAt = subject.indexOf('.', TELEMETRY_DOT.length) + 1;
      const deviceAt = tenantAt === 0 ? 0 : subject.indexOf('.', tenantAt) + 1;
      if (deviceAt > 0 && subject.indexOf('.', deviceAt) === -1)
        this.onTelemetry(subject, subject.slice(tenantAt, deviceAt - 1), data);
      return;
    }
    const parts = subject.split('.');
    if (parts.length === 3 && parts[0] === DEADLETTER_PREFIX) this.onDeadLetter(parts[1]!, parts[2]!, data);
  }

  private onTelemetry(subject: string, tenant: string, data: Uint8Array): void {
    const now = this.clock();
    this.events += 1;
    this.tenant(tenant).events += 1;
    touch(this.lastSeen, subject, now);
    if (this.lastSeen.size > this.limits.reportingTracked) {
      this.lastSeen.delete(this.lastSeen.keys().next().value!);
      this.reportingCapped = true;
    }
    const changed = this.changed.get(subject);
    if (changed === undefined) this.changed.set(subject, { subject, raw: data, atMs: now });
    else {
      changed.raw = data;
      changed.atMs = now;
      touch(this.changed, subject, changed);
    }
    if (this.changed.size > this.limits.readings) {
      this.changed.delete(this.changed.keys().next().value!);
      this.leftOut += 1;
    }
  }

  private onDeadLetter(tenant: string, reason: string, data: Uint8Array): void {
    this.deadletters += 1;
    this.tenant(tenant).deadletters += 1;
    const name = this.reasons.has(reason) || this.reasons.size < this.limits.reasons ? reason : OTHER;
    const entry = this.reasons.get(name);
    if (entry === undefined) this.reasons.set(name, { count: 1, raw: data });
    else {
      entry.count += 1;
      entry.raw = data;
    }
  }

  /** The summary of everything since the last call, which starts the next interval. */
  take(): GatewayLiveSummary {
    const now = this.clock();
    const horizon = now - this.limits.reportingWindowMs;
    for (const [key, seen] of this.lastSeen) {
      if (seen > horizon) break;
      this.lastSeen.delete(key);
    }
    if (this.lastSeen.size < this.limits.reportingTracked) this.reportingCapped = false;
    const summary: GatewayLiveSummary = {
      gateway: this.gatewayId,
      atMs: now,
      intervalMs: Math.max(0, now - this.since),
      events: this.events,
      deadletters: this.deadletters,
      reporting: this.lastSeen.size,
      reportingCapped: this.reportingCapped,
      tenants: [...this.tenants].map(([tenant, c]) => ({ tenant, ...c })),
      reasons: [...this.reasons].map(([reason, r]) => this.reasonOf(reason, r)),
      readings: [...this.changed.values()].map((c) => this.readingOf(c)),
      readingsLeftOut: this.leftOut,
    };
    this.since = now;
    this.events = 0;
    this.deadletters = 0;
    this.leftOut = 0;
    this.changed.clear();
    this.tenants.clear();
    this.reasons.clear();
    return summary;
  }

  private tenant(name: string): { events: number; deadletters: number } {
    let entry = this.tenants.get(name);
    if (entry === undefined) {
      // The `(other)` bucket comes on top of the limit.
      const key = this.tenants.size >= this.limits.tenants ? OTHER : name;
      entry = this.tenants.get(key) ?? { events: 0, deadletters: 0 };
      this.tenants.set(key, entry);
    }
    return entry;
  }

  private readingOf(c: Changed): GatewayLiveSummary['readings'][number] {
    const [, , tenant, deviceId] = c.subject.split('.');
    const reading: GatewayLiveSummary['readings'][number] = {
      tenant: tenant!,
      deviceId: deviceId!,
      atMs: c.atMs,
      metrics: [],
      more: 0,
    };
    const event = CanonicalEvent.safeParse(parseJson(c.raw));
    if (event.success) {
      reading.ts = event.data.ts;
      if (event.data.labels.type !== undefined) reading.type = event.data.labels.type;
      const metrics = Object.entries(event.data.metrics);
      reading.metrics = metrics
        .slice(0, this.limits.metricsPerReading)
        .map(([name, m]) => [name, m.value, m.unit] as [string, number, string]);
      reading.more = Math.max(0, metrics.length - this.limits.metricsPerReading);
    }
    return reading;
  }

  private reasonOf(reason: string, r: Reason): GatewayLiveSummary['reasons'][number] {
    const letter = DeadLetter.safeParse(parseJson(r.raw));
    if (!letter.success) return { reason, count: r.count };
    const { tenant, deviceId, detail, receivedAt } = letter.data;
    return {
      reason,
      count: r.count,
      last: { tenant, deviceId, detail: detail.slice(0, LIVE_SUMMARY_DETAIL_MAX_CHARS), receivedAt },
    };
  }
}

export interface LiveSummaries {
  close(): void;
}

/**
 * Publishes the summarizer's summary every `intervalMs` on `gateways.live.{gateway}`, core NATS: a
 * summary is only worth anything while it is fresh, so none is stored or retried (one the connection
 * cannot take now is dropped, and its counts with it: the view's figures are a live view's, not a
 * ledger). An interval in which nothing was stored is still published: it says the gateway is there.
 */
export function startLiveSummaries(
  nc: NatsConnection,
  summarizer: LiveSummarizer,
  log: Logger,
  intervalMs = LIVE_SUMMARY_INTERVAL_MS,
): LiveSummaries {
  const subject = gatewayLiveSubject(summarizer.gatewayId);
  const timer = setInterval(() => {
    const summary = summarizer.take();
    if (nc.isClosed() || nc.isDraining()) return;
    try {
      nc.publish(subject, JSON.stringify(summary));
    } catch (err) {
      log.debug({ err }, 'live summary not published');
    }
  }, intervalMs);
  timer.unref();
  return {
    close() {
      clearInterval(timer);
    },
  };
}
