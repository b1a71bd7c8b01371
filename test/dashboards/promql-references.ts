import type { MetricCatalog } from './schema.js';

/**
 * Metric and label names a PromQL expression refers to, and a check of them against the series the
 * gateway and the processors expose. Syntax is left to a real PromQL engine (the Prometheus query
 * test); this only needs to find names in expressions that parse.
 */

/** Words of PromQL that look like metric names: operators, modifiers and aggregation keywords. */
const PROMQL_WORDS = new Set(
  [
    'by without on ignoring group_left group_right bool and or unless offset atan2 inf nan',
    // Aggregation operators may be followed by `by (…)` rather than `(`.
    'sum min max avg group stddev stdvar count count_values bottomk topk quantile',
  ]
    .join(' ')
    .split(' '),
);

/** Clauses whose parenthesised list holds label names. */
const LABEL_LIST_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

export interface PromqlReferences {
  metrics: string[];
  labels: string[];
}

export function promqlReferences(expr: string): PromqlReferences {
  const metrics = new Set<string>();
  const labels = new Set<string>();
  // Grafana variables and macros first (`$__rate_interval`, `${x}`): they are neither.
  let text = expr.replace(/\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]/g, '0');
  text = text.replace(/"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`/g, '""');
  // Label matchers: names before the operator are labels; values are strings, removed above.
  text = text.replace(/\{([^}]*)\}/g, (_, inner: string) => {
    for (const m of inner.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)/g)) labels.add(m[1]!);
    return ' ';
  });
  // Range and subquery selectors, numbers and durations (`1e3` would read as a name `e3`).
  text = text.replace(/\[[^\]]*\]/g, ' ');
  text = text.replace(/(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)*/gi, ' ');
  const words = [...text.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*|\(|\)/g)].map((m) => m[0]);
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === '(' || word === ')') continue;
    const lower = word.toLowerCase();
    if (LABEL_LIST_WORDS.has(lower) && words[i + 1] === '(') {
      for (i += 2; i < words.length && words[i] !== ')'; i++) labels.add(words[i]!);
      continue;
    }
    if (PROMQL_WORDS.has(lower) || words[i + 1] === '(') continue;
    metrics.add(word);
  }
  return { metrics: [...metrics], labels: [...labels] };
}

/** Names the catalog does not have: unknown series, and labels none of the expression's series carry. */
export function checkPromqlReferences(expr: string, catalog: MetricCatalog): string[] {
  const { metrics, labels } = promqlReferences(expr);
  const problems: string[] = [];
  const known = new Set<string>();
  for (const name of metrics) {
    const series = catalog.get(name);
    if (series) for (const l of series) known.add(l);
    else problems.push(`unknown metric ${name}`);
  }
  if (metrics.length === 0) problems.push('refers to no metric');
  for (const label of labels) {
    if (!known.has(label)) problems.push(`label ${label} is on none of ${metrics.join(', ')}`);
  }
  return problems;
}
