/**
 * What an InfluxQL query refers to: measurements (FROM), tags and fields (SELECT, WHERE, GROUP BY,
 * SHOW … WITH KEY), through subqueries, and a check of those names against what the processors write.
 * A small tokenizer and a clause splitter, not a full InfluxQL parser: syntax is InfluxDB's business
 * (the query test runs every query on a real one); this only has to find names reliably in queries
 * that parse.
 */

type Token =
  | { t: 'ident'; v: string; quoted: boolean }
  | { t: 'keyword'; v: string }
  | { t: 'string'; v: string }
  | { t: 'regex'; v: string }
  | { t: 'number'; v: string }
  | { t: 'var'; v: string }
  | { t: 'op'; v: string };

const KEYWORDS = new Set(
  [
    'SELECT FROM WHERE GROUP BY ORDER LIMIT OFFSET SLIMIT SOFFSET AS AND OR INTO ASC DESC TRUE FALSE',
    'SHOW TAG VALUES KEYS FIELD MEASUREMENTS MEASUREMENT SERIES WITH KEY IN ON',
  ]
    .join(' ')
    .split(' '),
);

// Longest first, so that `=~` is not read as `=`.
const OPERATORS = '=~ !~ != <> <= >= :: = < > + - * / % ( ) , ; .'.split(' ');

/** Ends a clause of a SELECT at paren depth 0. */
const CLAUSE_KEYWORDS = new Set('FROM WHERE GROUP ORDER LIMIT OFFSET SLIMIT SOFFSET INTO'.split(' '));

export class InfluxqlSyntaxError extends Error {}

function readQuoted(text: string, start: number, quote: string): [value: string, end: number] {
  let value = '';
  let i = start + 1;
  while (i < text.length && text[i] !== quote) {
    if (text[i] === '\\' && i + 1 < text.length) i++;
    value += text[i];
    i++;
  }
  if (i >= text.length) throw new InfluxqlSyntaxError(`unterminated ${quote} at ${start}`);
  return [value, i + 1];
}

export function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  // A `/` starts a regex only where InfluxQL expects one; elsewhere it divides.
  const regexMayFollow = () => {
    const prev = tokens.at(-1);
    return (
      (prev?.t === 'op' && (prev.v === '=~' || prev.v === '!~')) ||
      (prev?.t === 'keyword' && prev.v === 'FROM')
    );
  };
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      const [v, end] = readQuoted(text, i, '"');
      tokens.push({ t: 'ident', v, quoted: true });
      i = end;
    } else if (c === "'") {
      const [v, end] = readQuoted(text, i, "'");
      tokens.push({ t: 'string', v });
      i = end;
    } else if (c === '/' && regexMayFollow()) {
      const [v, end] = readQuoted(text, i, '/');
      tokens.push({ t: 'regex', v });
      i = end;
    } else if (c === '$' || text.startsWith('[[', i)) {
      const m = /^(\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])/.exec(text.slice(i));
      if (!m) throw new InfluxqlSyntaxError(`stray ${c} at ${i}`);
      tokens.push({ t: 'var', v: m[1]! });
      i += m[1]!.length;
    } else if (/\d/.test(c)) {
      const m = /^\d+(\.\d+)?(e[+-]?\d+)?(ns|u|µ|ms|s|m|h|d|w)?/i.exec(text.slice(i))!;
      tokens.push({ t: 'number', v: m[0] });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i))!;
      const upper = m[0].toUpperCase();
      tokens.push(KEYWORDS.has(upper) ? { t: 'keyword', v: upper } : { t: 'ident', v: m[0], quoted: false });
      i += m[0].length;
    } else {
      const op = OPERATORS.find((o) => text.startsWith(o, i));
      if (!op) throw new InfluxqlSyntaxError(`unexpected ${c} at ${i}`);
      tokens.push({ t: 'op', v: op });
      i += op.length;
    }
  }
  return tokens;
}

/** A tag or field name as written; `variable` when it holds a Grafana variable (`"$metric"`). */
export interface NameRef {
  name: string;
  variable: boolean;
}

export interface SelectItem {
  refs: NameRef[];
  /** The column this item produces, as an enclosing query sees it. */
  output: string | undefined;
}

export type Source = { measurement: string } | { regex: string } | { subquery: SelectStatement };

export interface SelectStatement {
  kind: 'select';
  items: SelectItem[];
  sources: Source[];
  whereRefs: NameRef[];
  groupByTags: NameRef[];
}

export interface ShowStatement {
  kind: 'show';
  /** `TAG VALUES`, `FIELD KEYS`, … */
  what: string;
  from: string | undefined;
  /** `WITH KEY = "k"` names; undefined when the key is a regex (it cannot be checked). */
  keys: NameRef[] | undefined;
  whereRefs: NameRef[];
}

export type Statement = SelectStatement | ShowStatement;

const isOp = (tok: Token | undefined, v: string) => tok?.t === 'op' && tok.v === v;
const isKeyword = (tok: Token | undefined, v: string) => tok?.t === 'keyword' && tok.v === v;

/** Index of the `)` closing the `(` at `open`. */
function closing(tokens: readonly Token[], open: number): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (isOp(tokens[i], '(')) depth++;
    else if (isOp(tokens[i], ')') && --depth === 0) return i;
  }
  throw new InfluxqlSyntaxError('unbalanced parentheses');
}

function nameRef(tok: Token & { t: 'ident' }): NameRef {
  return { name: tok.v, variable: tok.v.includes('$') || tok.v.includes('[[') };
}

/**
 * Names in an expression: identifiers that are not function names (followed by `(`), not type casts
 * (after `::`) and not `time`.
 */
function expressionRefs(tokens: readonly Token[]): NameRef[] {
  const refs: NameRef[] = [];
  tokens.forEach((tok, i) => {
    if (tok.t !== 'ident') return;
    if (isOp(tokens[i + 1], '(') || isOp(tokens[i - 1], '::')) return;
    if (!tok.quoted && tok.v.toLowerCase() === 'time') return;
    refs.push(nameRef(tok));
  });
  return refs;
}

/** Splits at commas outside parentheses. */
function splitTopLevel(tokens: readonly Token[]): Token[][] {
  const parts: Token[][] = [[]];
  let depth = 0;
  for (const tok of tokens) {
    if (isOp(tok, '(')) depth++;
    if (isOp(tok, ')')) depth--;
    if (depth === 0 && isOp(tok, ',')) parts.push([]);
    else parts.at(-1)!.push(tok);
  }
  return parts.filter((p) => p.length > 0);
}

function selectItem(tokens: readonly Token[]): SelectItem {
  let body = tokens;
  let output: string | undefined;
  const last = tokens.at(-1);
  if (tokens.length >= 3 && isKeyword(tokens.at(-2), 'AS') && last?.t === 'ident') {
    output = last.v;
    body = tokens.slice(0, -2);
  }
  const first = body[0];
  if (output === undefined && first?.t === 'ident') {
    // InfluxDB names an unaliased column after the field, or after the function computing it.
    output = body.length === 1 ? first.v : isOp(body[1], '(') ? first.v.toLowerCase() : undefined;
  }
  return { refs: expressionRefs(body), output };
}

function groupByTags(tokens: readonly Token[]): NameRef[] {
  const tags: NameRef[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    // time(…) and fill(…) are not tags.
    if (tok.t === 'ident' && isOp(tokens[i + 1], '(')) {
      i = closing(tokens, i + 1);
      continue;
    }
    if (tok.t === 'ident') tags.push(nameRef(tok));
  }
  return tags;
}

function parseSources(tokens: readonly Token[]): Source[] {
  if (isOp(tokens[0], '(')) {
    const end = closing(tokens, 0);
    return [{ subquery: parseSelect(tokens.slice(1, end)) }];
  }
  return splitTopLevel(tokens).map((part) => {
    const regex = part.find((t) => t.t === 'regex');
    if (regex) return { regex: regex.v };
    // "db"."rp"."measurement": the last one is the measurement.
    const names = part.filter((t): t is Token & { t: 'ident' } => t.t === 'ident');
    if (names.length === 0) throw new InfluxqlSyntaxError('FROM names nothing');
    return { measurement: names.at(-1)!.v };
  });
}

function parseSelect(tokens: readonly Token[]): SelectStatement {
  if (!isKeyword(tokens[0], 'SELECT')) throw new InfluxqlSyntaxError('expected SELECT');
  const clauses = new Map<string, Token[]>();
  let current = 'SELECT';
  let body: Token[] = [];
  for (let i = 1; i < tokens.length; i++) {
    const tok = tokens[i]!;
    if (isOp(tok, '(')) {
      const end = closing(tokens, i);
      body.push(...tokens.slice(i, end + 1));
      i = end;
      continue;
    }
    if (tok.t === 'keyword' && CLAUSE_KEYWORDS.has(tok.v)) {
      clauses.set(current, body);
      current = tok.v;
      body = [];
      if (current === 'GROUP' || current === 'ORDER') {
        if (!isKeyword(tokens[i + 1], 'BY')) throw new InfluxqlSyntaxError(`${current} without BY`);
        i++;
      }
      continue;
    }
    body.push(tok);
  }
  clauses.set(current, body);
  const from = clauses.get('FROM');
  if (!from) throw new InfluxqlSyntaxError('SELECT without FROM');
  return {
    kind: 'select',
    items: splitTopLevel(clauses.get('SELECT') ?? []).map(selectItem),
    sources: parseSources(from),
    whereRefs: expressionRefs(clauses.get('WHERE') ?? []),
    groupByTags: groupByTags(clauses.get('GROUP') ?? []),
  };
}

function parseShow(tokens: readonly Token[]): ShowStatement {
  let i = 1;
  const what: string[] = [];
  while (
    tokens[i]?.t === 'keyword' &&
    !['ON', 'FROM', 'WITH', 'WHERE', 'LIMIT', 'OFFSET'].includes(tokens[i]!.v)
  ) {
    what.push(tokens[i]!.v);
    i++;
  }
  let from: string | undefined;
  let keys: NameRef[] | undefined = [];
  let whereRefs: NameRef[] = [];
  while (i < tokens.length) {
    const tok = tokens[i]!;
    if (isKeyword(tok, 'ON')) {
      i += 2;
    } else if (isKeyword(tok, 'FROM')) {
      const end = tokens.findIndex((t, j) => j > i && t.t === 'keyword' && t.v !== 'FROM');
      const source = parseSources(tokens.slice(i + 1, end === -1 ? undefined : end))[0];
      if (source && 'measurement' in source) from = source.measurement;
      else throw new InfluxqlSyntaxError('SHOW … FROM must name one measurement');
      i = end === -1 ? tokens.length : end;
    } else if (isKeyword(tok, 'WITH') && isKeyword(tokens[i + 1], 'KEY')) {
      const end = tokens.findIndex(
        (t, j) => j > i + 1 && t.t === 'keyword' && ['WHERE', 'LIMIT', 'OFFSET'].includes(t.v),
      );
      const keyTokens = tokens.slice(i + 3, end === -1 ? undefined : end);
      keys = keyTokens.some((t) => t.t === 'regex')
        ? undefined
        : keyTokens.filter((t): t is Token & { t: 'ident' } => t.t === 'ident').map(nameRef);
      i = end === -1 ? tokens.length : end;
    } else if (isKeyword(tok, 'WHERE')) {
      const end = tokens.findIndex((t, j) => j > i && t.t === 'keyword' && ['LIMIT', 'OFFSET'].includes(t.v));
      whereRefs = expressionRefs(tokens.slice(i + 1, end === -1 ? undefined : end));
      i = end === -1 ? tokens.length : end;
    } else {
      i++;
    }
  }
  return { kind: 'show', what: what.join(' '), from, keys, whereRefs };
}

/** The statements of a query (`;`-separated), or a syntax error. */
export function parseInfluxql(text: string): Statement[] {
  const statements: Statement[] = [];
  let tokens = tokenize(text);
  while (tokens.length > 0) {
    let end = tokens.findIndex((t) => isOp(t, ';'));
    if (end === -1) end = tokens.length;
    const part = tokens.slice(0, end);
    tokens = tokens.slice(end + 1);
    if (part.length === 0) continue;
    if (isKeyword(part[0], 'SELECT')) statements.push(parseSelect(part));
    else if (isKeyword(part[0], 'SHOW')) statements.push(parseShow(part));
    else throw new InfluxqlSyntaxError(`neither SELECT nor SHOW: ${part[0]?.v}`);
  }
  return statements;
}

/** Tags and fields of one measurement; `any` fields for `telemetry`, whose fields are metric names. */
export interface MeasurementSchema {
  tags: ReadonlySet<string>;
  fields: ReadonlySet<string> | 'any';
}

export type InfluxSchema = ReadonlyMap<string, MeasurementSchema>;

const show = (refs: readonly NameRef[]) => refs.map((r) => `"${r.name}"`).join(', ');

/** Names the columns of a subquery offers to the query around it, and the tags it keeps. */
interface Offered {
  columns: Set<string>;
  tags: Set<string>;
}

function checkSelect(s: SelectStatement, schema: InfluxSchema, problems: string[]): Offered {
  const selected = s.items.flatMap((item) => item.refs);
  const offered: Offered = { columns: new Set(), tags: new Set() };
  for (const source of s.sources) {
    if ('regex' in source) {
      problems.push(`FROM /${source.regex}/: name the measurement, a regex cannot be checked`);
      continue;
    }
    if ('subquery' in source) {
      const inner = checkSelect(source.subquery, schema, problems);
      const known = new Set([...inner.columns, ...inner.tags]);
      for (const r of [...selected, ...s.whereRefs]) {
        if (!known.has(r.name)) problems.push(`"${r.name}" is not a column or tag of the subquery`);
      }
      for (const r of s.groupByTags) {
        if (!inner.tags.has(r.name)) problems.push(`GROUP BY "${r.name}": the subquery does not group by it`);
      }
      continue;
    }
    const m = schema.get(source.measurement);
    if (!m) {
      problems.push(`unknown measurement "${source.measurement}"`);
      continue;
    }
    const fields = m.fields;
    // A variable names a field only where any field may be (telemetry: one field per metric).
    const isField = (r: NameRef) => (fields === 'any' ? true : !r.variable && fields.has(r.name));
    for (const r of selected) {
      if (!m.tags.has(r.name) && !isField(r))
        problems.push(`unknown field "${r.name}" in ${source.measurement}`);
    }
    for (const r of s.whereRefs) {
      // On telemetry any literal name would pass as a metric, so its filters must be on tags.
      const ok = m.tags.has(r.name) || (fields === 'any' ? r.variable : isField(r));
      if (!ok) problems.push(`unknown tag or field "${r.name}" in WHERE on ${source.measurement}`);
    }
    for (const r of s.groupByTags) {
      if (!m.tags.has(r.name)) problems.push(`unknown tag "${r.name}" in GROUP BY on ${source.measurement}`);
    }
  }
  for (const item of s.items) if (item.output !== undefined) offered.columns.add(item.output);
  for (const r of s.groupByTags) offered.tags.add(r.name);
  return offered;
}

function checkShow(s: ShowStatement, schema: InfluxSchema, problems: string[]): void {
  if (s.from === undefined) {
    if (s.what !== 'MEASUREMENTS') problems.push(`SHOW ${s.what} without FROM: name the measurement`);
    return;
  }
  const m = schema.get(s.from);
  if (!m) {
    problems.push(`unknown measurement "${s.from}"`);
    return;
  }
  if (s.keys === undefined) problems.push(`WITH KEY as a regex cannot be checked: name the tag`);
  const unknownKeys = (s.keys ?? []).filter((k) => !m.tags.has(k.name));
  if (unknownKeys.length > 0) problems.push(`unknown tag ${show(unknownKeys)} in WITH KEY on ${s.from}`);
  const unknownWhere = s.whereRefs.filter((r) => !m.tags.has(r.name));
  if (unknownWhere.length > 0) problems.push(`unknown tag ${show(unknownWhere)} in WHERE on ${s.from}`);
}

/** Every reference of the query that the schema does not have, one message each. */
export function checkInfluxqlReferences(text: string, schema: InfluxSchema): string[] {
  const problems: string[] = [];
  let statements: Statement[];
  try {
    statements = parseInfluxql(text);
  } catch (err) {
    if (!(err instanceof InfluxqlSyntaxError)) throw err;
    return [`cannot read the query: ${err.message}`];
  }
  // InfluxQL on InfluxDB 3 lacks these (docs: "InfluxQL feature support"); the dashboards must run there.
  for (const tok of tokenize(text)) {
    if (tok.t === 'keyword' && (tok.v === 'SLIMIT' || tok.v === 'SOFFSET')) {
      problems.push(`${tok.v}: InfluxDB 3 does not support it`);
    }
  }
  for (const s of statements) {
    if (s.kind === 'select') checkSelect(s, schema, problems);
    else checkShow(s, schema, problems);
  }
  return problems;
}
