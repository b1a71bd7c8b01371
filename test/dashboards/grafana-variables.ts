/**
 * Grafana's template substitution, as far as these dashboards use it, so that a query can be run
 * outside Grafana: `$name`, `${name}`, `${name:format}` and `[[name]]`, dashboard variables and the
 * built-in macros.
 */

/**
 * What the built-ins become in the checks. `$timeFilter` is the InfluxDB datasource's own macro
 * (Grafana writes absolute `time >= …ms and time <= …ms`; a relative filter reads the same data
 * without knowing when the test started).
 */
export const BUILT_IN_MACROS: Readonly<Record<string, string>> = {
  timeFilter: 'time > now() - 1h',
  __interval: '10s',
  __interval_ms: '10000',
  __rate_interval: '1m',
  __range: '1h',
  __range_s: '3600',
  __range_ms: '3600000',
};

const REFERENCE = /\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)/g;

function escapeRegex(value: string): string {
  return value.replace(/[\\^$*+?.()|[\]{}/]/g, '\\$&');
}

/**
 * How Grafana renders a variable's values: one value as is (escaped with `:regex`); several, as its
 * InfluxDB and Prometheus datasources do by default, as an escaped regex alternation `(a|b)`.
 */
function render(values: readonly string[], format: string | undefined): string {
  if (values.length === 1) return format === 'regex' ? escapeRegex(values[0]!) : values[0]!;
  return `(${values.map(escapeRegex).join('|')})`;
}

/** The names a query refers to, built-ins included. */
export function variableReferences(text: string): string[] {
  const names = new Set<string>();
  for (const m of text.matchAll(REFERENCE)) names.add((m[1] ?? m[3] ?? m[5])!);
  return [...names];
}

export interface Substituted {
  text: string;
  /** Names referenced that are neither built-ins nor given values. */
  unknown: string[];
}

export function substituteVariables(
  text: string,
  values: Readonly<Record<string, readonly string[]>>,
  macros: Readonly<Record<string, string>> = BUILT_IN_MACROS,
): Substituted {
  const unknown = new Set<string>();
  const out = text.replace(REFERENCE, (whole, braced, bracedFormat, bracketed, bracketedFormat, bare) => {
    const name = (braced ?? bracketed ?? bare) as string;
    const format = (bracedFormat ?? bracketedFormat) as string | undefined;
    const macro = macros[name];
    if (macro !== undefined) return macro;
    const value = values[name];
    if (value === undefined || value.length === 0) {
      unknown.add(name);
      return whole;
    }
    return render(value, format);
  });
  return { text: out, unknown: [...unknown] };
}
