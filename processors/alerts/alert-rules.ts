import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { missingUnit, parseDuration } from '../../common/duration.js';
import { ALERT_SEVERITIES, type AlertSeverity } from '../../contract/alerts.js';
import {
  isMetricName,
  LABEL_KEY_PATTERN,
  LABEL_VALUE_MAX_CHARS,
  METRIC_NAME_PATTERN,
  TENANT_PATTERN,
} from '../../contract/index.js';
import { AlertRulesError } from '../errors.js';

/**
 * Alert rules: one YAML or JSON file (path in ALERT_RULES_FILE) holding `rules`, a list of rules.
 * Values are compared in the metric's canonical unit (contract/units.ts), whatever the device sent.
 *
 * ```yaml
 * rules:
 *   # Every rule: name (unique, [A-Za-z0-9_.-]{1,64}), type, severity (info|warning|critical),
 *   # metric, and optionally tenant, labels (all must match the device's registry labels) and
 *   # description (used as the alert message's prefix).
 *   - name: too-hot
 *     type: threshold
 *     severity: critical
 *     metric: temperature
 *     labels: { type: thermometer }
 *     op: '>'               # > >= < <=
 *     value: 80
 *     for: 30s              # the condition must hold this long before firing; default 0s
 *     clear: 75             # resolves once the value is back past this (≤ 75 here); default: value
 *
 *   - name: heating-fast
 *     type: rate_of_change  # change per second between consecutive readings,
 *     severity: warning     # or against the reading `window` earlier when window is set
 *     metric: temperature
 *     abs: true             # compare |rate|; default false (signed: `op: '<'`, `value: -2` for falls)
 *     op: '>'
 *     value: 2              # canonical unit per second
 *     window: 10s           # optional
 *     for: 0s               # optional, as for threshold
 *     clear: 1              # optional, as for threshold
 *
 *   - name: silent
 *     type: absence         # a device that has reported the metric sends no reading of it for
 *     severity: warning     # `after`; resolves on its next reading of it
 *     metric: temperature
 *     tenant: acme
 *     after: 2m
 *
 *   - name: odd-pressure
 *     type: anomaly         # z-score of each reading against the device's EWMA mean and variance
 *     severity: info
 *     metric: pressure
 *     alpha: 0.1            # EWMA weight of a new reading, 0 < alpha < 1
 *     z: 3                  # fires when |z| ≥ z
 *     clear_z: 1.5          # resolves when |z| < clear_z; default z / 2
 *     warmup: 20            # readings learned before it may fire; default 20, at least 2
 *     min_stddev: 0.5       # floor on the standard deviation, for signals that barely move; default 0
 *     for: 0s               # optional, as for threshold
 *     relearn_after: 1h     # optional: a level shift firing this long becomes the new baseline
 * ```
 *
 * Durations are `500ms`, `30s`, `2m`, `1h` (a unit is required: a bare `30` would be ambiguous).
 * Unknown keys are errors, so a misspelt `fro: 30s` is not silently a rule that fires at once.
 */

export const COMPARISON_OPS = ['>', '>=', '<', '<='] as const;
export type ComparisonOp = (typeof COMPARISON_OPS)[number];
export const ALERT_RULE_TYPES = ['threshold', 'rate_of_change', 'absence', 'anomaly'] as const;
export type AlertRuleType = (typeof ALERT_RULE_TYPES)[number];

export const RULE_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
export const DEFAULT_ANOMALY_WARMUP = 20;
/** Resolving at half the firing z-score keeps a reading hovering around `z` from flapping. */
export const DEFAULT_CLEAR_Z_RATIO = 0.5;
/** Long enough for any sensible baseline (10 000 readings at alpha 0.0001 is already sluggish). */
export const MAX_ANOMALY_WARMUP = 10_000;
const DESCRIPTION_MAX_CHARS = 500;

interface RuleBase {
  name: string;
  severity: AlertSeverity;
  metric: string;
  /** Only devices of this tenant; all tenants when absent. */
  tenant?: string;
  /** Every entry must equal the device's registry label; empty matches every device. */
  labels: Readonly<Record<string, string>>;
  description?: string;
}

/** Fires when `x op value` has held for `forMs`; resolves once `x op clear` no longer holds. */
interface Comparison {
  op: ComparisonOp;
  value: number;
  clear: number;
  forMs: number;
}

export interface ThresholdRule extends RuleBase, Comparison {
  type: 'threshold';
}

export interface RateOfChangeRule extends RuleBase, Comparison {
  type: 'rate_of_change';
  /** Compare |rate| rather than the signed rate. */
  abs: boolean;
  /** 0: between consecutive readings; otherwise against the reading at least this long before. */
  windowMs: number;
}

export interface AbsenceRule extends RuleBase {
  type: 'absence';
  afterMs: number;
}

export interface AnomalyRule extends RuleBase {
  type: 'anomaly';
  alpha: number;
  z: number;
  clearZ: number;
  warmup: number;
  minStddev: number;
  forMs: number;
  relearnAfterMs?: number;
}

export type AlertRule = ThresholdRule | RateOfChangeRule | AbsenceRule | AnomalyRule;

const DURATION_HINT = 'expected a duration like 500ms, 30s, 2m, 1h';

/**
 * A message for a value of the wrong type or outside an enum. A missing field falls through to the
 * parse-wide map (`required`), and range checks keep zod's own wording (`Too big: …`).
 */
const wrongType =
  (message: string) =>
  (iss: { code?: string; input?: unknown }): string | undefined =>
    iss.input !== undefined && (iss.code === 'invalid_type' || iss.code === 'invalid_value')
      ? message
      : undefined;

const duration = (min: 'zero' | 'positive') =>
  z.string({ error: wrongType(DURATION_HINT) }).transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined || (min === 'positive' && ms <= 0)) {
      ctx.addIssue({
        code: 'custom',
        message: missingUnit(text) ?? (min === 'positive' ? `${DURATION_HINT}, above 0` : DURATION_HINT),
      });
      return z.NEVER;
    }
    return ms;
  });

const finite = z.number({ error: wrongType('expected a finite number') });

const common = {
  name: z.string().regex(RULE_NAME_PATTERN, 'expected 1-64 of A-Z a-z 0-9 _ . -'),
  severity: z.enum(ALERT_SEVERITIES, { error: wrongType(`expected one of ${ALERT_SEVERITIES.join(', ')}`) }),
  metric: z.string().refine(isMetricName, `expected a metric name matching ${METRIC_NAME_PATTERN}`),
  tenant: z.string().regex(TENANT_PATTERN, `expected a tenant matching ${TENANT_PATTERN}`).optional(),
  labels: z
    .record(
      z.string().regex(LABEL_KEY_PATTERN, `expected label keys matching ${LABEL_KEY_PATTERN}`),
      z
        .string({ error: wrongType("label values are strings: quote numbers, e.g. rack: '12'") })
        .max(LABEL_VALUE_MAX_CHARS),
    )
    .optional(),
  description: z.string().max(DESCRIPTION_MAX_CHARS).optional(),
};

const comparison = {
  op: z.enum(COMPARISON_OPS, {
    error: wrongType(`expected one of ${COMPARISON_OPS.join(' ')} (quote it in YAML)`),
  }),
  value: finite,
  clear: finite.optional(),
  for: duration('zero').optional(),
};

type Ctx = z.core.$RefinementCtx<unknown>;
/** Cross-field checks also run when another field of the rule is invalid: every problem at once. */
const always = { when: () => true };

/** `clear` must lie on the resolving side of `value`, or the alert could never resolve. */
function checkClear(raw: unknown, ctx: Ctx): void {
  const r = raw as { op?: unknown; value?: unknown; clear?: unknown };
  if (typeof r.value !== 'number' || typeof r.clear !== 'number') return;
  const above = r.op === '>' || r.op === '>=';
  const below = r.op === '<' || r.op === '<=';
  if ((above && r.clear > r.value) || (below && r.clear < r.value)) {
    ctx.addIssue({
      code: 'custom',
      path: ['clear'],
      message: `must be ${above ? '≤' : '≥'} value (${r.value}) for op '${String(r.op)}': it is where the alert resolves`,
    });
  }
}

function checkClearZ(raw: unknown, ctx: Ctx): void {
  const r = raw as { z?: unknown; clear_z?: unknown };
  if (typeof r.z === 'number' && typeof r.clear_z === 'number' && r.clear_z > r.z) {
    ctx.addIssue({ code: 'custom', path: ['clear_z'], message: `must be ≤ z (${r.z})` });
  }
}

const ThresholdSchema = z
  .strictObject({ type: z.literal('threshold'), ...common, ...comparison })
  .superRefine(checkClear, always);

const RateOfChangeSchema = z
  .strictObject({
    type: z.literal('rate_of_change'),
    ...common,
    ...comparison,
    abs: z.boolean().optional(),
    window: duration('positive').optional(),
  })
  .superRefine(checkClear, always);

const AbsenceSchema = z.strictObject({
  type: z.literal('absence'),
  ...common,
  after: duration('positive'),
});

const AnomalySchema = z
  .strictObject({
    type: z.literal('anomaly'),
    ...common,
    alpha: finite.gt(0).lt(1),
    z: finite.positive(),
    clear_z: finite.positive().optional(),
    warmup: z.int().min(2).max(MAX_ANOMALY_WARMUP).optional(),
    min_stddev: finite.nonnegative().optional(),
    for: duration('zero').optional(),
    relearn_after: duration('positive').optional(),
  })
  .superRefine(checkClearZ, always);

const RuleSchema = z.discriminatedUnion(
  'type',
  [ThresholdSchema, RateOfChangeSchema, AbsenceSchema, AnomalySchema],
  {
    error: (iss) =>
      iss.code === 'invalid_union'
        ? `expected type to be one of ${ALERT_RULE_TYPES.join(', ')}`
        : iss.code === 'invalid_type'
          ? 'expected a rule: an object with name, type, severity and metric'
          : undefined,
  },
);

/** Names identify alerts downstream (the `rule` tag), so two rules may not share one. */
function checkUniqueNames(raw: unknown, ctx: Ctx): void {
  if (!Array.isArray(raw)) return;
  const firstIndex = new Map<string, number>();
  raw.forEach((rule: unknown, i) => {
    const name = (rule as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') return;
    const first = firstIndex.get(name);
    if (first === undefined) firstIndex.set(name, i);
    else
      ctx.addIssue({
        code: 'custom',
        path: [i, 'name'],
        message: `duplicate: rules[${first}] is also '${name}'`,
      });
  });
}

export const AlertRulesFileSchema = z.strictObject({
  rules: z.array(RuleSchema).superRefine(checkUniqueNames, always),
});
type RuleInput = z.output<typeof RuleSchema>;

function toRule(r: RuleInput): AlertRule {
  const base: RuleBase = {
    name: r.name,
    severity: r.severity,
    metric: r.metric,
    labels: Object.freeze({ ...r.labels }),
    ...(r.tenant !== undefined && { tenant: r.tenant }),
    ...(r.description !== undefined && { description: r.description }),
  };
  switch (r.type) {
    case 'threshold':
      return {
        ...base,
        type: r.type,
        op: r.op,
        value: r.value,
        clear: r.clear ?? r.value,
        forMs: r.for ?? 0,
      };
    case 'rate_of_change':
      return {
        ...base,
        type: r.type,
        op: r.op,
        value: r.value,
        clear: r.clear ?? r.value,
        forMs: r.for ?? 0,
        abs: r.abs ?? false,
        windowMs: r.window ?? 0,
      };
    case 'absence':
      return { ...base, type: r.type, afterMs: r.after };
    case 'anomaly':
      return {
        ...base,
        type: r.type,
        alpha: r.alpha,
        z: r.z,
        clearZ: r.clear_z ?? r.z * DEFAULT_CLEAR_Z_RATIO,
        warmup: r.warmup ?? DEFAULT_ANOMALY_WARMUP,
        minStddev: r.min_stddev ?? 0,
        forMs: r.for ?? 0,
        ...(r.relearn_after !== undefined && { relearnAfterMs: r.relearn_after }),
      };
  }
}

/** `rules[3] 'too-hot' clear: must be ≤ value …`: the index always, the name when there is one. */
function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const [top, index, ...rest] = issue.path;
  if (top !== 'rules' || typeof index !== 'number') {
    return `${issue.path.map(String).join('.') || '(file)'}: ${issue.message}`;
  }
  const rules = (input as { rules?: unknown }).rules as unknown[];
  const name = (rules[index] as { name?: unknown } | null)?.name;
  const where = typeof name === 'string' ? `rules[${index}] '${name}'` : `rules[${index}]`;
  if (issue.code === 'unrecognized_keys') return `${where}: unknown key(s) ${issue.keys.join(', ')}`;
  const field = rest.map(String).join('.');
  return field ? `${where} ${field}: ${issue.message}` : `${where}: ${issue.message}`;
}

export type AlertRulesFormat = 'yaml' | 'json';

function parseText(text: string, format: AlertRulesFormat, source: string): unknown {
  if (format === 'json') {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new AlertRulesError(source, [`not valid JSON: ${(err as Error).message}`], { cause: err });
    }
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new AlertRulesError(
      source,
      doc.errors.map((e) => `not valid YAML: ${e.message}`),
    );
  }
  return doc.toJS();
}

/** Validates rules text; throws AlertRulesError listing every problem. Each rule is frozen. */
export function parseAlertRules(
  text: string,
  format: AlertRulesFormat,
  source = `(${format} text)`,
): AlertRule[] {
  const input = parseText(text, format, source);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new AlertRulesError(source, ['(file): expected an object with a `rules` list']);
  }
  const result = AlertRulesFileSchema.safeParse(input, {
    error: (iss) => (iss.input === undefined ? 'required' : undefined),
  });
  if (!result.success) {
    // Stable sort: each rule's problems together, in file order, whatever check found them.
    const ruleIndex = (i: z.core.$ZodIssue) => (typeof i.path[1] === 'number' ? i.path[1] : -1);
    const issues = [...result.error.issues].sort((a, b) => ruleIndex(a) - ruleIndex(b));
    throw new AlertRulesError(
      source,
      issues.map((i) => describeIssue(i, input)),
    );
  }
  return result.data.rules.map((r) => Object.freeze(toRule(r)));
}

/** JSON for `.json`, YAML for `.yaml`/`.yml`; otherwise JSON when the text starts like JSON. */
export function detectRulesFormat(path: string, text: string): AlertRulesFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  return /^\s*[{[]/.test(text) ? 'json' : 'yaml';
}

export function loadAlertRules(path: string): AlertRule[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AlertRulesError(path, [`cannot read: ${(err as Error).message}`], { cause: err });
  }
  return parseAlertRules(text, detectRulesFormat(path, text), path);
}
