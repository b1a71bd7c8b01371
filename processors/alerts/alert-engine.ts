import { formatDuration } from '../../common/duration.js';
import type { AlertState, AlertTransition, CanonicalEvent } from '../../contract/index.js';
import { TELEMETRY_PARTITIONS } from '../../contract/subjects.js';
import { DEFAULT_MAX_FREED_DEVICES } from '../config.js';
import type { LimitReached } from '../metrics.js';
import type { AlertRule, AnomalyRule, ComparisonOp, RateOfChangeRule } from './alert-rules.js';

/**
 * Evaluates alert rules (alert-rules.ts) per (tenant, device, rule). Pure: no I/O, no timers, no
 * clock of its own; the caller publishes the transitions on `alertsSubject(tenant, deviceId)` and
 * writes them to the `alerts` measurement (value, state) at `atMs`.
 *
 * Lifecycle: ok → pending (condition true, waiting out `for`) → firing → ok again, announced as
 * `resolved`. Only `firing` and `resolved` are emitted; a pending condition that lapses is silent.
 * A firing alert does not fire again until it has resolved, and it resolves only once the value is
 * back past `clear` (hysteresis), not merely back under the firing threshold.
 *
 * Time. Conditions are judged in event time (the readings' `ts`), so a backlog or a replay gives the
 * same alerts as live processing, at the same `atMs`, which makes InfluxDB writes idempotent:
 * - Between readings a value is taken to hold (sample and hold): `temperature > 80 for 30s` fires
 *   at t + 30s after a breaching reading at t unless a reading in between ends the breach.
 * - Each device has an event clock: the latest `ts` it sent. A new event moves it forward, and
 *   conditions that came due before the event's time fire first (so one event may both reveal a
 *   30s gap in a metric and end it, returning firing and resolved together).
 * - A silent device sends nothing to move its clock, so `tick(wallNowMs)` advances it by the wall
 *   time elapsed since its latest event was handled (the wall clock `onEvent` was given). That is
 *   how absence and `for` fire for a device that has gone quiet; the transition's `atMs` is still
 *   the event-time moment the condition came due (e.g. last reading + `after`).
 * Late readings: per rule, a reading not newer than the last one the rule took is ignored (and
 * counted in `ignoredReadings`): it cannot rewrite a decision already announced, break the rate's
 * time order, or be learned twice into an anomaly baseline (redeliveries have the same `ts`).
 * A resolution is never stamped earlier than its firing.
 *
 * Only firing alerts are carried across a restart or a partition move: the partition's checkpoint
 * keeps its devices' `active()` alerts and the next owner calls `restoreFiring`, so an alert that
 * fired before the replayed range is still resolved (and not fired again) by later readings.
 * Pending conditions, rate histories and anomaly baselines are rebuilt from the readings that
 * follow; a restored anomaly alert resolves on its next reading, its baseline being gone.
 *
 * Memory: per device a few numbers and, per rule it has readings for, one small object (anomaly
 * adds three numbers; a windowed rate keeps at most ~RATE_SAMPLES_PER_WINDOW earlier readings).
 * State lives until `forgetDevice`, or until the device has been silent for `deviceStateTtlMs`
 * (DEVICE_STATE_TTL) with nothing left to come due and no alert firing: then only its event clock
 * is kept (at most `maxForgotten`, the longest-forgotten dropped first), so that a reading older
 * than what the rules already took is still ignored when the device comes back. Its rules start
 * over: a rate needs two readings again, an anomaly baseline its warm-up.
 */
/** A windowed rate keeps one earlier reading per window / this, so its base is at most that far off. */
export const RATE_SAMPLES_PER_WINDOW = 16;
/** Reported z-scores are clamped so they stay finite field values (InfluxDB refuses ±Infinity). */
export const MAX_REPORTED_Z = 1e6;

const OK = 0;
const PENDING = 1;
const FIRING = 2;
type Phase = typeof OK | typeof PENDING | typeof FIRING;

class RuleState {
  phase: Phase = OK;
  /** Event time of the last reading this rule took. */
  lastTs = Number.NEGATIVE_INFINITY;
  /** The compared quantity at lastTs, held until the next reading. */
  lastX = 0;
  /** When the condition became true (pending). */
  since = 0;
  /** atMs of the last transition. */
  lastAt = Number.NEGATIVE_INFINITY;
  // Anomaly baseline: readings learned, EWMA mean and variance.
  n = 0;
  mean = 0;
  variance = 0;
  /** Rate of change: earlier readings, flat and ascending [ts, value, ts, value, …]. */
  samples: number[] | undefined = undefined;
}

/** The alert name among `rules`, or -1. */
const ruleIndex = (rules: readonly AlertRule[], name: string) => rules.findIndex((r) => r.name === name);

interface DeviceState {
  readonly tenant: string;
  readonly deviceId: string;
  /** A new rule state starts from here: the event clock the device had when its state was freed. */
  floorTs: number;
  /** Latest event time seen, and the wall time it was handled at. */
  clockTs: number;
  clockWallMs: number;
  /** Indexed like the engine's rules; a hole until the device has a reading for that rule. */
  readonly rules: (RuleState | undefined)[];
  /** Earliest event time at which a `for` or an absence can come due; Infinity when none can. */
  deadline: number;
}

/** A threshold-like condition on the quantity x, shared by threshold, rate_of_change and anomaly. */
interface Condition {
  forMs: number;
  breaches(x: number): boolean;
  /** While firing: false once x is back past the clear level. */
  holds(x: number): boolean;
  firingText(x: number): string;
  resolvedText(x: number): string;
}

const compare = (op: ComparisonOp, a: number, b: number): boolean =>
  op === '>' ? a > b : op === '>=' ? a >= b : op === '<' ? a < b : a <= b;
const NEGATED: Readonly<Record<ComparisonOp, string>> = { '>': '≤', '>=': '<', '<': '≥', '<=': '>' };

/** Enough digits for a message; the exact value is in the `value` field. */
const num = (x: number): string => String(Number(x.toPrecision(4)));
const forText = (ms: number): string => (ms > 0 ? ` for ${formatDuration(ms)}` : '');

function conditionOf(rule: AlertRule): Condition | undefined {
  switch (rule.type) {
    case 'threshold':
      return {
        forMs: rule.forMs,
        breaches: (x) => compare(rule.op, x, rule.value),
        holds: (x) => compare(rule.op, x, rule.clear),
        firingText: (x) => `${rule.metric} ${num(x)} ${rule.op} ${num(rule.value)}${forText(rule.forMs)}`,
        resolvedText: (x) => `${rule.metric} ${num(x)} ${NEGATED[rule.op]} ${num(rule.clear)}`,
      };
    case 'rate_of_change': {
      const what = rule.abs ? `|${rule.metric} rate|` : `${rule.metric} rate`;
      const per = rule.windowMs > 0 ? `/s over ${formatDuration(rule.windowMs)}` : '/s';
      return {
        forMs: rule.forMs,
        breaches: (x) => compare(rule.op, x, rule.value),
        holds: (x) => compare(rule.op, x, rule.clear),
        firingText: (x) => `${what} ${num(x)}${per} ${rule.op} ${num(rule.value)}${forText(rule.forMs)}`,
        resolvedText: (x) => `${what} ${num(x)}${per} ${NEGATED[rule.op]} ${num(rule.clear)}`,
      };
    }
    case 'anomaly':
      return {
        forMs: rule.forMs,
        breaches: (z) => Math.abs(z) >= rule.z,
        holds: (z) => Math.abs(z) >= rule.clearZ,
        firingText: (z) => `${rule.metric} z-score ${num(z)}, |z| ≥ ${num(rule.z)}${forText(rule.forMs)}`,
        resolvedText: (z) => `${rule.metric} z-score ${num(z)}, |z| < ${num(rule.clearZ)}`,
      };
    case 'absence':
      return undefined;
  }
}

const deviceKey = (tenant: string, deviceId: string): string => `${tenant}/${deviceId}`;

function selects(rule: AlertRule, event: CanonicalEvent): boolean {
  if (rule.tenant !== undefined && rule.tenant !== event.tenant) return false;
  for (const key in rule.labels) {
    if (!Object.hasOwn(event.labels, key) || event.labels[key] !== rule.labels[key]) return false;
  }
  return true;
}

/**
 * Change per second against the base reading: the previous one, or with a window the latest kept
 * reading at least `windowMs` older. Undefined until there is such a base.
 */
function rateOf(rule: RateOfChangeRule, state: RuleState, ts: number, value: number): number | undefined {
  state.samples ??= [];
  const s = state.samples;
  if (rule.windowMs === 0) {
    const rate = s.length > 0 ? (value - s[1]!) / ((ts - s[0]!) / 1_000) : undefined;
    s[0] = ts;
    s[1] = value;
    return rate;
  }
  const horizon = ts - rule.windowMs;
  let base = -1;
  for (let k = 0; k < s.length && s[k]! <= horizon; k += 2) base = k;
  // Later readings have later horizons: nothing before the base can be a base again.
  if (base > 0) s.splice(0, base);
  const rate = base >= 0 ? (value - s[1]!) / ((ts - s[0]!) / 1_000) : undefined;
  // Thinning bounds memory whatever the reading rate; the base is then at most window/16 older.
  if (s.length === 0 || ts - s[s.length - 2]! >= rule.windowMs / RATE_SAMPLES_PER_WINDOW) s.push(ts, value);
  return rate;
}

function zScore(rule: AnomalyRule, state: RuleState, value: number): number {
  const sd = Math.max(Math.sqrt(state.variance), rule.minStddev);
  const diff = value - state.mean;
  if (sd === 0) return diff === 0 ? 0 : Math.sign(diff) * MAX_REPORTED_Z;
  return Math.max(-MAX_REPORTED_Z, Math.min(MAX_REPORTED_Z, diff / sd));
}

/**
 * EWMA mean and variance (Finch, "Incremental calculation of weighted mean and variance", 2009).
 * The weight is at least 1/n, so the first readings give the plain mean and population variance
 * rather than a baseline biased towards the very first reading.
 */
function learn(rule: AnomalyRule, state: RuleState, value: number): void {
  state.n++;
  const a = Math.max(rule.alpha, 1 / state.n);
  const diff = value - state.mean;
  const incr = a * diff;
  state.mean += incr;
  state.variance = (1 - a) * (state.variance + diff * incr);
}

export interface AlertEngineOptions {
  /** DEVICE_STATE_TTL: silence after which a device's rule state is freed; never when left out. */
  deviceStateTtlMs?: number;
  /** Event clocks of freed devices kept, at most; DEFAULT_MAX_FORGOTTEN_DEVICES when left out. */
  maxForgotten?: number;
  onLimit?: LimitReached;
}

/** MAX_FREED_DEVICES for each of the partitions one instance may hold. */
export const DEFAULT_MAX_FORGOTTEN_DEVICES = DEFAULT_MAX_FREED_DEVICES * TELEMETRY_PARTITIONS;

export class AlertEngine {
  private readonly rules: readonly AlertRule[];
  private readonly conditions: readonly (Condition | undefined)[];
  private readonly devices = new Map<string, DeviceState>();
  /** Freed devices' event clocks, longest-forgotten first. */
  private readonly forgotten = new Map<string, number>();
  private readonly ttlMs: number;
  private readonly maxForgotten: number;
  private readonly onLimit: LimitReached;
  /** Firing alerts by `${tenant}/${deviceId}/${rule}`, as their firing transition. */
  private readonly firing = new Map<string, AlertTransition>();
  private ignored = 0;

  constructor(rules: readonly AlertRule[], options: AlertEngineOptions = {}) {
    const names = new Set(rules.map((r) => r.name));
    // Names key the alerts (and the `rule` tag); loadAlertRules guarantees this, hand-built lists may not.
    if (names.size !== rules.length) throw new Error('alert rule names must be unique');
    this.rules = [...rules];
    this.conditions = this.rules.map(conditionOf);
    this.ttlMs = options.deviceStateTtlMs ?? Number.POSITIVE_INFINITY;
    this.maxForgotten = options.maxForgotten ?? DEFAULT_MAX_FORGOTTEN_DEVICES;
    this.onLimit = options.onLimit ?? (() => undefined);
  }

  /** Freed devices whose event clock is still kept. */
  get forgottenCount(): number {
    return this.forgotten.size;
  }

  get deviceCount(): number {
    return this.devices.size;
  }

  /** Readings a rule ignored because they were not newer than the last one it took. */
  get ignoredReadings(): number {
    return this.ignored;
  }

  /**
   * Evaluates the event's metrics against the rules that select its device. `wallNowMs` is the
   * caller's clock when it handles the event, the same clock it gives `tick`; without it the
   * gateway's `receivedAt` stands in. A decoded event's `tsMs` (contract/decode-canonical-event.ts)
   * is its `ts` parsed already.
   */
  onEvent(
    event: CanonicalEvent & { tsMs?: number },
    wallNowMs: number = Date.parse(event.receivedAt),
  ): AlertTransition[] {
    const ts = event.tsMs ?? Date.parse(event.ts);
    const out: AlertTransition[] = [];
    if (!Number.isFinite(ts)) return out;
    const key = deviceKey(event.tenant, event.deviceId);
    let device = this.devices.get(key);
    // Conditions that came due strictly before this event's time; at its time, its readings decide.
    if (device && ts > device.clockTs) this.advance(device, ts, false, out);
    for (let i = 0; i < this.rules.length; i++) {
      const rule = this.rules[i]!;
      if (!selects(rule, event)) {
        // Relabelled in the registry: the rule no longer concerns this device.
        if (device?.rules[i]) this.drop(device, i, ts, 'the device no longer matches the rule', out);
        continue;
      }
      if (!Object.hasOwn(event.metrics, rule.metric)) continue;
      const value = event.metrics[rule.metric]!.value;
      if (!Number.isFinite(value)) continue;
      if (!device) {
        const floorTs = this.forgotten.get(key) ?? Number.NEGATIVE_INFINITY;
        this.forgotten.delete(key);
        device = {
          tenant: event.tenant,
          deviceId: event.deviceId,
          floorTs,
          clockTs: floorTs,
          clockWallMs: wallNowMs,
          rules: [],
          deadline: Number.POSITIVE_INFINITY,
        };
        this.devices.set(key, device);
      }
      let state = device.rules[i];
      if (!state) {
        state = new RuleState();
        // Readings up to the clock the device had when it was freed were judged already.
        state.lastTs = device.floorTs;
        device.rules[i] = state;
      }
      if (ts <= state.lastTs) {
        this.ignored++;
        continue;
      }
      this.take(device, i, state, ts, value, out);
    }
    if (!device) return out;
    if (ts > device.clockTs) {
      device.clockTs = ts;
      device.clockWallMs = wallNowMs;
    }
    this.refreshDeadline(device);
    return out;
  }

  /**
   * Time-based conditions (absence, `for`) of devices that have sent nothing since: each device's
   * event clock is its latest `ts` plus the wall time elapsed since that event was handled.
   */
  tick(wallNowMs: number): AlertTransition[] {
    const out: AlertTransition[] = [];
    for (const [key, device] of this.devices) {
      if (device.deadline !== Number.POSITIVE_INFINITY) {
        const clock = device.clockTs + Math.max(0, wallNowMs - device.clockWallMs);
        this.advance(device, clock, true, out);
      }
      // Silent for the TTL, nothing left to come due (an absence not yet fired keeps it), no alert
      // firing (what would resolve it): only its clock is worth keeping.
      if (
        device.deadline === Number.POSITIVE_INFINITY &&
        wallNowMs - device.clockWallMs >= this.ttlMs &&
        !device.rules.some((r) => r?.phase === FIRING)
      )
        this.free(key, device);
    }
    return out;
  }

  /** Forgets every device `which` picks, as forgetDevice does (a partition moved to another instance). */
  forgetDevices(which: (tenant: string, deviceId: string) => boolean): void {
    for (const device of [...this.devices.values()])
      if (which(device.tenant, device.deviceId)) this.forgetDevice(device.tenant, device.deviceId);
    for (const key of [...this.forgotten.keys()]) {
      const slash = key.indexOf('/');
      if (which(key.slice(0, slash), key.slice(slash + 1))) this.forgotten.delete(key);
    }
  }

  private free(key: string, device: DeviceState): void {
    this.devices.delete(key);
    if (!Number.isFinite(device.clockTs)) return;
    this.forgotten.set(key, device.clockTs);
    if (this.forgotten.size <= this.maxForgotten) return;
    const oldest = this.forgotten.keys().next().value!;
    this.forgotten.delete(oldest);
    this.onLimit('MAX_FREED_DEVICES');
  }

  /** Alerts firing now, as their firing transitions. */
  active(): AlertTransition[] {
    return [...this.firing.values()];
  }

  /**
   * Takes alerts a previous owner had firing (its checkpointed `active()`), so that later readings
   * resolve them instead of firing them again. Alerts of rules that no longer exist, or already
   * known to fire, are left alone.
   */
  restoreFiring(alerts: readonly AlertTransition[], wallNowMs: number): void {
    for (const t of alerts) {
      const i = ruleIndex(this.rules, t.rule);
      if (i < 0) continue;
      const rule = this.rules[i]!;
      const key = deviceKey(t.tenant, t.deviceId);
      let device = this.devices.get(key);
      if (!device) {
        this.forgotten.delete(key);
        device = {
          tenant: t.tenant,
          deviceId: t.deviceId,
          floorTs: Number.NEGATIVE_INFINITY,
          clockTs: Number.NEGATIVE_INFINITY,
          clockWallMs: wallNowMs,
          rules: [],
          deadline: Number.POSITIVE_INFINITY,
        };
        this.devices.set(key, device);
      }
      const state = device.rules[i] ?? new RuleState();
      if (state.phase === FIRING) continue;
      device.rules[i] = state;
      state.phase = FIRING;
      state.lastAt = t.atMs;
      state.since = t.atMs;
      state.lastX = t.value;
      // An absence fired `after` past the last reading; anything else fired at a reading's time.
      // Readings up to then were judged already; the ones after it decide the resolution.
      state.lastTs = rule.type === 'absence' ? t.atMs - rule.afterMs : t.atMs;
      if (state.lastTs > device.clockTs) device.clockTs = state.lastTs;
      this.firing.set(`${key}/${t.rule}`, t);
      this.refreshDeadline(device);
    }
  }

  /**
   * Drops a device's state (a device removed from the registry, or one silent for good). Returns
   * the alerts that were firing for it, which nothing will resolve now; publishing a resolution
   * for them is the caller's decision.
   */
  forgetDevice(tenant: string, deviceId: string): AlertTransition[] {
    const key = deviceKey(tenant, deviceId);
    const device = this.devices.get(key);
    if (!device) return [];
    this.devices.delete(key);
    const dropped: AlertTransition[] = [];
    for (const rule of this.rules) {
      const alertKey = `${key}/${rule.name}`;
      const firing = this.firing.get(alertKey);
      if (firing) {
        dropped.push(firing);
        this.firing.delete(alertKey);
      }
    }
    return dropped;
  }

  /** A reading newer than the rule's last one. */
  private take(
    device: DeviceState,
    i: number,
    state: RuleState,
    ts: number,
    value: number,
    out: AlertTransition[],
  ) {
    const rule = this.rules[i]!;
    switch (rule.type) {
      case 'absence': {
        const gapMs = ts - state.lastTs;
        state.lastTs = ts;
        if (state.phase === FIRING) {
          const text = `${rule.metric} reported again after ${formatDuration(gapMs)}`;
          this.resolve(device, i, state, ts, gapMs / 1_000, text, out);
        }
        return;
      }
      case 'threshold':
        state.lastTs = ts;
        this.step(device, i, state, ts, value, out);
        return;
      case 'rate_of_change': {
        const rate = rateOf(rule, state, ts, value);
        state.lastTs = ts;
        if (rate !== undefined && Number.isFinite(rate)) {
          this.step(device, i, state, ts, rule.abs ? Math.abs(rate) : rate, out);
        }
        return;
      }
      case 'anomaly': {
        state.lastTs = ts;
        if (state.phase === FIRING && state.n < rule.warmup) {
          // Restored from a checkpoint without its baseline: nothing to judge the reading against.
          const text = `${rule.metric} baseline relearned: it was not carried over when the partition moved`;
          this.resolve(device, i, state, ts, 0, text, out);
          learn(rule, state, value);
          return;
        }
        const z = state.n >= rule.warmup ? zScore(rule, state, value) : undefined;
        if (
          z !== undefined &&
          state.phase === FIRING &&
          rule.relearnAfterMs !== undefined &&
          ts - state.lastAt >= rule.relearnAfterMs
        ) {
          // A level shift that outlasts relearn_after is the new normal: learn it from scratch.
          const text = `${rule.metric} baseline relearned after ${formatDuration(ts - state.lastAt)} firing`;
          this.resolve(device, i, state, ts, z, text, out);
          state.n = 0;
          state.mean = 0;
          state.variance = 0;
        } else if (z !== undefined) {
          this.step(device, i, state, ts, z, out);
        }
        // Only readings judged normal are learned: a spike, or a shift while it is pending or
        // firing, would otherwise drag the baseline towards itself and resolve its own alert.
        if (state.phase === OK) learn(rule, state, value);
        return;
      }
    }
  }

  /** The ok → pending → firing → ok machine, on a new value x of the compared quantity. */
  private step(
    device: DeviceState,
    i: number,
    state: RuleState,
    ts: number,
    x: number,
    out: AlertTransition[],
  ) {
    const cond = this.conditions[i]!;
    state.lastX = x;
    if (state.phase === FIRING) {
      if (!cond.holds(x)) this.resolve(device, i, state, ts, x, cond.resolvedText(x), out);
      return;
    }
    if (!cond.breaches(x)) {
      state.phase = OK;
      return;
    }
    if (state.phase === OK) {
      state.phase = PENDING;
      state.since = ts;
    }
    if (state.since + cond.forMs <= ts) {
      this.fire(device, i, state, state.since + cond.forMs, x, cond.firingText(x), out);
    }
  }

  /**
   * Fires what came due by event time `clock` (inclusive: at `clock` itself too), in the order it
   * came due, so that a tick between two readings only anticipates what the second would reveal.
   */
  private advance(device: DeviceState, clock: number, inclusive: boolean, out: AlertTransition[]) {
    const isDue = (at: number) => (inclusive ? at <= clock : at < clock);
    if (!isDue(device.deadline)) return;
    const due: [atMs: number, rule: number][] = [];
    for (let i = 0; i < this.rules.length; i++) {
      const at = this.dueAt(device, i);
      if (isDue(at)) due.push([at, i]);
    }
    due.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [at, i] of due) {
      const state = device.rules[i]!;
      const rule = this.rules[i]!;
      if (rule.type === 'absence') {
        const text = `no ${rule.metric} reading for ${formatDuration(rule.afterMs)}`;
        this.fire(device, i, state, at, rule.afterMs / 1_000, text, out);
      } else {
        this.fire(device, i, state, at, state.lastX, this.conditions[i]!.firingText(state.lastX), out);
      }
    }
    this.refreshDeadline(device);
  }

  /** When rule i's time-based condition comes due for the device, in event time; Infinity if it cannot. */
  private dueAt(device: DeviceState, i: number): number {
    const state = device.rules[i];
    if (!state) return Number.POSITIVE_INFINITY;
    const rule = this.rules[i]!;
    if (rule.type === 'absence')
      return state.phase === FIRING ? Number.POSITIVE_INFINITY : state.lastTs + rule.afterMs;
    return state.phase === PENDING ? state.since + rule.forMs : Number.POSITIVE_INFINITY;
  }

  private refreshDeadline(device: DeviceState): void {
    let deadline = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.rules.length; i++) deadline = Math.min(deadline, this.dueAt(device, i));
    device.deadline = deadline;
  }

  private drop(device: DeviceState, i: number, ts: number, why: string, out: AlertTransition[]) {
    const state = device.rules[i]!;
    if (state.phase === FIRING) this.resolve(device, i, state, ts, state.lastX, why, out);
    device.rules[i] = undefined;
  }

  private fire(
    device: DeviceState,
    i: number,
    state: RuleState,
    atMs: number,
    value: number,
    text: string,
    out: AlertTransition[],
  ) {
    state.phase = FIRING;
    const t = this.transition(device, i, state, 'firing', atMs, value, text);
    this.firing.set(`${deviceKey(device.tenant, device.deviceId)}/${t.rule}`, t);
    out.push(t);
  }

  private resolve(
    device: DeviceState,
    i: number,
    state: RuleState,
    atMs: number,
    value: number,
    text: string,
    out: AlertTransition[],
  ) {
    state.phase = OK;
    const t = this.transition(device, i, state, 'resolved', atMs, value, text);
    this.firing.delete(`${deviceKey(device.tenant, device.deviceId)}/${t.rule}`);
    out.push(t);
  }

  private transition(
    device: DeviceState,
    i: number,
    state: RuleState,
    kind: AlertState,
    atMs: number,
    value: number,
    text: string,
  ): AlertTransition {
    const rule = this.rules[i]!;
    // A late-arriving reading, or a tick that ran ahead of one, must not put a transition before
    // the previous one.
    state.lastAt = Math.max(atMs, state.lastAt);
    return {
      tenant: device.tenant,
      deviceId: device.deviceId,
      rule: rule.name,
      severity: rule.severity,
      state: kind,
      value,
      atMs: state.lastAt,
      message: rule.description ? `${rule.description}: ${text}` : text,
    };
  }
}
