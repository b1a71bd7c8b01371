import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { type AlertRule, loadAlertRules, parseAlertRules } from '../../processors/alerts/alert-rules.js';
import { AlertRulesError } from '../../processors/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'alert-rules-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The problems an invalid rules text is rejected with. */
function problemsOf(text: string, format: 'yaml' | 'json' = 'yaml'): readonly string[] {
  try {
    parseAlertRules(text, format);
  } catch (err) {
    expect(err).toBeInstanceOf(AlertRulesError);
    expect((err as AlertRulesError).code).toBe('ALERT_RULES_INVALID');
    return (err as AlertRulesError).problems;
  }
  throw new Error('expected the rules to be rejected');
}

const EXAMPLE_YAML = `
rules:
  - name: too-hot
    type: threshold
    severity: critical
    metric: temperature
    labels: { type: thermometer }
    description: Boiler overheating
    op: '>'
    value: 80
    for: 30s
    clear: 75
  - name: heating-fast
    type: rate_of_change
    severity: warning
    metric: temperature
    abs: true
    op: '>'
    value: 2
    window: 10s
  - name: silent
    type: absence
    severity: warning
    metric: temperature
    tenant: acme
    after: 2m
  - name: odd-pressure
    type: anomaly
    severity: info
    metric: pressure
    alpha: 0.1
    z: 3
    relearn_after: 1h
`;

const EXPECTED: AlertRule[] = [
  {
    name: 'too-hot',
    type: 'threshold',
    severity: 'critical',
    metric: 'temperature',
    labels: { type: 'thermometer' },
    description: 'Boiler overheating',
    op: '>',
    value: 80,
    clear: 75,
    forMs: 30_000,
  },
  {
    name: 'heating-fast',
    type: 'rate_of_change',
    severity: 'warning',
    metric: 'temperature',
    labels: {},
    abs: true,
    op: '>',
    value: 2,
    clear: 2,
    forMs: 0,
    windowMs: 10_000,
  },
  {
    name: 'silent',
    type: 'absence',
    severity: 'warning',
    metric: 'temperature',
    tenant: 'acme',
    labels: {},
    afterMs: 120_000,
  },
  {
    name: 'odd-pressure',
    type: 'anomaly',
    severity: 'info',
    metric: 'pressure',
    labels: {},
    alpha: 0.1,
    z: 3,
    clearZ: 1.5,
    warmup: 20,
    minStddev: 0,
    forMs: 0,
    relearnAfterMs: 3_600_000,
  },
];

describe('loadAlertRules', () => {
  it('loads the demo fleet’s rules, which watch what the demo’s episodes make happen', () => {
    const rules = loadAlertRules(
      fileURLToPath(new URL('../../scripts/demo-alert-rules.yaml', import.meta.url)),
    );
    expect(rules.map((r) => [r.name, r.type, r.metric, r.tenant])).toEqual([
      ['overheating', 'threshold', 'temperature', 'demo'],
      ['silent', 'absence', 'battery', 'demo'],
    ]);
  });

  it('loads a YAML file with every rule type, defaults filled in', () => {
    const rules = loadAlertRules(file('rules.yaml', EXAMPLE_YAML));
    expect(rules).toEqual(EXPECTED);
    expect(Object.isFrozen(rules[0])).toBe(true);
  });

  it('loads the same rules from a JSON file, and detects JSON by content without an extension', () => {
    const json = JSON.stringify({
      rules: [
        {
          name: 'too-hot',
          type: 'threshold',
          severity: 'critical',
          metric: 'temperature',
          labels: { type: 'thermometer' },
          description: 'Boiler overheating',
          op: '>',
          value: 80,
          for: '30s',
          clear: 75,
        },
        {
          name: 'heating-fast',
          type: 'rate_of_change',
          severity: 'warning',
          metric: 'temperature',
          abs: true,
          op: '>',
          value: 2,
          window: '10s',
        },
        {
          name: 'silent',
          type: 'absence',
          severity: 'warning',
          metric: 'temperature',
          tenant: 'acme',
          after: '2m',
        },
        {
          name: 'odd-pressure',
          type: 'anomaly',
          severity: 'info',
          metric: 'pressure',
          alpha: 0.1,
          z: 3,
          relearn_after: '1h',
        },
      ],
    });
    expect(loadAlertRules(file('rules.json', json))).toEqual(EXPECTED);
    expect(loadAlertRules(file('rules-no-extension', json))).toEqual(EXPECTED);
    expect(loadAlertRules(file('yaml-no-extension', EXAMPLE_YAML))).toEqual(EXPECTED);
  });

  it('accepts an empty rule list', () => {
    expect(loadAlertRules(file('empty.yml', 'rules: []\n'))).toEqual([]);
  });

  it('names the file when it cannot be read', () => {
    const missing = join(dir, 'missing.yaml');
    expect(() => loadAlertRules(missing)).toThrow(AlertRulesError);
    try {
      loadAlertRules(missing);
    } catch (err) {
      expect((err as AlertRulesError).source).toBe(missing);
      expect((err as AlertRulesError).problems[0]).toMatch(/^cannot read: ENOENT/);
    }
  });

  it('reports malformed JSON and YAML, duplicate YAML keys included', () => {
    expect(() => loadAlertRules(file('bad.json', '{"rules": ['))).toThrow(/not valid JSON/);
    const problems = problemsOf('rules:\n  - name: a\n    name: b\n');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^not valid YAML: .*unique/i);
  });
});

describe('parseAlertRules validation', () => {
  it('lists every problem of every rule at once, naming the rule and the field', () => {
    const problems = problemsOf(`
rules:
  - name: too-hot
    type: threshold
    severity: severe
    metric: temperature
    op: '>'
    value: 80
    clear: 85
    for: 30
  - name: too-hot
    type: rate_of_change
    severity: warning
    metric: temperature
    op: '<'
    value: -2
    clear: -3
    window: 0s
  - type: absence
    severity: info
    metric: bad metric
    after: soon
  - name: odd
    type: anomaly
    severity: info
    metric: pressure
    alpha: 1
    z: 3
    clear_z: 4
    warmup: 1
  - name: typo
    type: threshold
    severity: info
    metric: temperature
    op: '=>'
    value: 1
    fro: 30s
    labels: { type: 12 }
  - name: what
    type: trend
    severity: info
    metric: temperature
`);
    expect(problems).toEqual([
      "rules[0] 'too-hot' severity: expected one of info, warning, critical",
      "rules[0] 'too-hot' for: expected a duration like 500ms, 30s, 2m, 1h",
      "rules[0] 'too-hot' clear: must be ≤ value (80) for op '>': it is where the alert resolves",
      "rules[1] 'too-hot' window: expected a duration like 500ms, 30s, 2m, 1h, above 0",
      "rules[1] 'too-hot' clear: must be ≥ value (-2) for op '<': it is where the alert resolves",
      "rules[1] 'too-hot' name: duplicate: rules[0] is also 'too-hot'",
      'rules[2] name: required',
      'rules[2] metric: expected a metric name matching /^[A-Za-z0-9_.-]{1,64}$/',
      'rules[2] after: expected a duration like 500ms, 30s, 2m, 1h, above 0',
      "rules[3] 'odd' alpha: Too big: expected number to be <1",
      "rules[3] 'odd' warmup: Too small: expected number to be >=2",
      "rules[3] 'odd' clear_z: must be ≤ z (3)",
      "rules[4] 'typo' labels.type: label values are strings: quote numbers, e.g. rack: '12'",
      "rules[4] 'typo' op: expected one of > >= < <= (quote it in YAML)",
      "rules[4] 'typo': unknown key(s) fro",
      "rules[5] 'what' type: expected type to be one of threshold, rate_of_change, absence, anomaly",
    ]);
  });

  it('puts the whole list in the error message', () => {
    expect(() =>
      parseAlertRules(
        '{"rules":[{"name":"x","type":"absence","severity":"info","metric":"t"}]}',
        'json',
        'f.json',
      ),
    ).toThrow("invalid alert rules in f.json:\n  - rules[0] 'x' after: required");
  });

  it('accepts clear on the threshold itself and on the resolving side, for every op', () => {
    const rule = (op: string, clear: number) =>
      `{name: r, type: threshold, severity: info, metric: t, op: '${op}', value: 10, clear: ${clear}}`;
    for (const [op, clear] of [
      ['>', 10],
      ['>', 5],
      ['>=', 5],
      ['<', 15],
      ['<=', 10],
    ] as const) {
      expect(parseAlertRules(`rules: [${rule(op, clear)}]`, 'yaml')[0]).toMatchObject({ op, clear });
    }
    expect(problemsOf(`rules: [${rule('>=', 11)}]`)).toHaveLength(1);
    expect(problemsOf(`rules: [${rule('<=', 9)}]`)).toHaveLength(1);
  });

  it('refuses a file without a rules list, and unknown top-level keys', () => {
    expect(problemsOf('- name: x\n')).toEqual(['(file): expected an object with a `rules` list']);
    expect(problemsOf('{"rule": []}', 'json')).toEqual([
      'rules: required',
      '(file): Unrecognized key: "rule"',
    ]);
    expect(problemsOf('rules:\n  - just a string\n')).toEqual([
      'rules[0]: expected a rule: an object with name, type, severity and metric',
    ]);
  });

  it('refuses an infinite threshold and a tenant outside the tenant grammar', () => {
    expect(
      problemsOf(
        'rules: [{name: r, type: threshold, severity: info, metric: t, op: ">", value: .inf, tenant: Acme}]',
      ),
    ).toEqual([
      "rules[0] 'r' tenant: expected a tenant matching /^[a-z0-9_-]{1,32}$/",
      "rules[0] 'r' value: expected a finite number",
    ]);
  });
});
