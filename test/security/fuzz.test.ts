import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CanonicalEvent,
  COMMANDS_LEAF,
  commandsFilterOwner,
  commandsTopic,
  DEVICE_ID_PATTERN,
  isMetricName,
  MAX_METRICS_PER_READING,
  PAYLOAD_VERSIONS,
  parseDeviceTopic,
  QUANTITIES,
  quantityOfMetric,
  statusTopic,
  telemetryTopic,
} from '../../contract/index.js';
import { REJECTION_REASONS } from '../../contract/rejections.js';
import { normaliseReading, type ReadingContext } from '../../gateway/ingest/normalise.js';
import { parseTelemetryPayload } from '../../gateway/ingest/parse-payload.js';

/**
 * Property tests of the pure ingest path (bytes → readings → canonical events) and of the topic
 * parser: whatever the input, they never throw, and each reading is either a canonical event that
 * meets every documented constraint or a rejection with a known reason code.
 *
 * Runs are bounded to keep each property well under a few seconds on a shared 2-core machine.
 * fast-check prints the seed and path of a failure; replay it with
 *   FC_SEED=<seed> FC_PATH=<path> npx vitest run test/security/fuzz.test.ts
 * (FC_SEED alone re-runs the same sequence from the start.)
 */
const SEED = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED);
const PATH = process.env.FC_PATH;
const runs = (numRuns: number): { numRuns: number; seed?: number; path?: string } => ({
  numRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
});

const MAX_PAYLOAD_BYTES = 65_536;
const MAX_READINGS = 1_000;
const YEAR_MS = 365 * 24 * 3_600_000;
/** Details quote device input; they must stay short whatever the input was. */
const MAX_DETAIL_CHARS = 400;

const CANONICAL_UNITS = new Set<string>(Object.values(QUANTITIES).map((q) => q.canonical));
const CANONICAL_OF_ALIAS = new Map<string, string>(
  Object.values(QUANTITIES).flatMap((q) => q.units.flatMap((u) => u.aliases.map((a) => [a, q.canonical]))),
);
const ALIASES = [...CANONICAL_OF_ALIAS.keys()];

/** Gateway configuration within realistic bounds (up to ten years either way). */
const contextArb = fc.record({
  receivedAtMs: fc.integer({
    min: Date.parse('2000-01-01T00:00:00Z'),
    max: Date.parse('2100-01-01T00:00:00Z'),
  }),
  publishName: fc.option(fc.string({ minLength: 1, maxLength: 12 }), { nil: undefined }),
  maxFutureMs: fc.oneof(fc.constant(5 * 60_000), fc.integer({ min: 0, max: 10 * YEAR_MS })),
  maxAgeMs: fc.oneof(fc.constant(7 * 24 * 3_600_000), fc.integer({ min: 1, max: 10 * YEAR_MS })),
});
type ContextInput = typeof contextArb extends fc.Arbitrary<infer T> ? T : never;

function contextOf(c: ContextInput): ReadingContext {
  return {
    tenant: 'acme',
    deviceId: 'dev-1',
    labels: { type: 'thermometer' },
    receivedAtMs: c.receivedAtMs,
    receivedAtIso: new Date(c.receivedAtMs).toISOString(),
    publishName: () => c.publishName ?? 'qos0',
    deduplicate: c.publishName !== undefined,
    maxFutureMs: c.maxFutureMs,
    maxAgeMs: c.maxAgeMs,
  };
}

function expectKnownRejection(r: { reason: string; detail: string }): void {
  expect(Object.hasOwn(REJECTION_REASONS, r.reason)).toBe(true);
  expect(typeof r.detail).toBe('string');
  expect(r.detail.length).toBeGreaterThan(0);
  expect(r.detail.length).toBeLessThanOrEqual(MAX_DETAIL_CHARS);
}

/** The documented constraints of a stored event (README: Payloads, Units, Canonical event). */
function expectCanonical(event: CanonicalEvent, ctx: ReadingContext): void {
  expect(CanonicalEvent.safeParse(event).success).toBe(true);
  // What JetStream stores is the JSON, where Infinity or NaN would have become null.
  expect(CanonicalEvent.safeParse(JSON.parse(JSON.stringify(event))).success).toBe(true);
  expect(event).toMatchObject({ tenant: ctx.tenant, deviceId: ctx.deviceId, labels: ctx.labels });
  expect(Object.hasOwn(PAYLOAD_VERSIONS, event.schemaVersion)).toBe(true);
  if (event.seq !== undefined) expect(Number.isSafeInteger(event.seq) && event.seq >= 0).toBe(true);
  const ts = Date.parse(event.ts);
  expect(ts).toBeGreaterThanOrEqual(ctx.receivedAtMs - ctx.maxAgeMs);
  expect(ts).toBeLessThanOrEqual(ctx.receivedAtMs + ctx.maxFutureMs);
  const names = Object.keys(event.metrics);
  expect(names.length).toBeGreaterThan(0);
  expect(names.length).toBeLessThanOrEqual(MAX_METRICS_PER_READING);
  for (const name of names) {
    const metric = event.metrics[name]!;
    expect(isMetricName(name)).toBe(true);
    expect(Number.isFinite(metric.value)).toBe(true);
    const quantity = quantityOfMetric(name);
    if (quantity !== undefined) expect(metric.unit).toBe(QUANTITIES[quantity].canonical);
    else expect(metric.unit === '' || CANONICAL_UNITS.has(metric.unit)).toBe(true);
    if (metric.originalUnit !== undefined) {
      expect(CANONICAL_OF_ALIAS.get(metric.originalUnit)).toBe(metric.unit);
      expect(metric.originalUnit).not.toBe(metric.unit);
    }
  }
}

/**
 * Bytes through the gateway's pure path, as the telemetry handler runs it. Each reading of the
 * payload is checked; the accepted ones are returned with their raw JSON for input/output checks.
 */
function ingest(bytes: Uint8Array, ctx: ReadingContext): Array<{ raw: unknown; event: CanonicalEvent }> {
  const parsed = parseTelemetryPayload(bytes, MAX_PAYLOAD_BYTES, MAX_READINGS);
  expect(parsed.readings.length).toBeGreaterThan(0);
  let json: unknown;
  const accepted: Array<{ raw: unknown; event: CanonicalEvent }> = [];
  for (const r of parsed.readings) {
    if (!r.ok) {
      expectKnownRejection(r);
      continue;
    }
    const n = normaliseReading(r.reading, r.version, r.index, ctx);
    if (!n.ok) {
      expectKnownRejection(n);
      continue;
    }
    expectCanonical(n.event, ctx);
    json ??= JSON.parse(Buffer.from(bytes).toString('utf8'));
    accepted.push({ raw: parsed.batch ? (json as unknown[])[r.index] : json, event: n.event });
  }
  return accepted;
}

/** Names a device could send: valid ones, the quantity hints, and every trap found so far. */
const metricNameArb = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.-]{1,64}$/) },
  {
    weight: 2,
    arbitrary: fc.constantFrom('temperature', 'humidity', 'pressure', 'energy', 'motor.speed', 'temp'),
  },
  // Valid names that are also Object.prototype members: they must be plain names, not lookups.
  {
    weight: 2,
    arbitrary: fc.constantFrom('toString', 'valueOf', 'hasOwnProperty', 'a.toString', '__defineGetter__'),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'x.__proto__',
      '',
      'a b',
      'n'.repeat(65),
      'température',
      'a\u0000b',
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
);

const numberArb = fc.oneof(
  fc.double(),
  // Finite, but past what a scaling unit (kWh, psi, bar, kHz…) can carry.
  fc.constantFrom(1e308, -1e308, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, -0, 2 ** 53, 1e-320),
  fc.integer(),
);
const anyJson = fc.jsonValue({ maxDepth: 3 });
/** Mostly what the field allows, sometimes anything: a reading with one bad field tests that field. */
const mostly = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 12, arbitrary: good as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: bad });

const junkValueArb = fc.oneof(fc.constantFrom('NaN', 'Infinity', '-Infinity', '1', null), anyJson);
const v1ValueArb = mostly(
  fc.oneof({ weight: 4, arbitrary: numberArb }, { weight: 1, arbitrary: fc.boolean() }),
  junkValueArb,
);
const unitArb = mostly(fc.constantFrom(...ALIASES), fc.oneof(fc.string({ maxLength: 40 }), anyJson));
const v2MetricArb = mostly(
  fc.record({ value: v1ValueArb, unit: unitArb }, { requiredKeys: ['value'] }),
  fc.oneof(numberArb, anyJson),
);

/** Readings shaped like the contract's, each field mostly valid and sometimes not. */
const readingArb = (received: number) => {
  const ts = mostly(
    fc.oneof(
      fc.integer({ min: received - 6 * 24 * 3_600_000, max: received + 4 * 60_000 }),
      fc.integer({ min: received - 6 * 24 * 3_600_000, max: received }).map((t) => new Date(t).toISOString()),
    ),
    fc.oneof(
      fc.integer({ min: received - 20 * YEAR_MS, max: received + 20 * YEAR_MS }),
      fc
        .date({ min: new Date(0), max: new Date(Date.UTC(9999, 0)), noInvalidDate: true })
        .map((d) => d.toISOString()),
      fc.constantFrom(0, -1, 1e20, 8.64e15, 1.5, '2026-02-30T00:00:00Z', '2026-11-28T12:00:00', 'now'),
      numberArb,
    ),
  );
  const seq = mostly(fc.nat(), fc.oneof(fc.integer(), fc.double(), fc.constantFrom('1', 2 ** 53, 1e300)));
  const metrics = (value: fc.Arbitrary<unknown>) =>
    mostly(fc.dictionary(metricNameArb, value, { minKeys: 1, maxKeys: 8 }), anyJson);
  const optional = { requiredKeys: ['metrics' as const] };
  return fc.oneof(
    fc.record({ v: fc.constant(1), ts, seq, metrics: metrics(v1ValueArb), firmware: anyJson }, optional),
    fc.record(
      { v: fc.constant(2), ts, seq, metrics: metrics(v2MetricArb), firmware: anyJson },
      { requiredKeys: ['v', 'metrics'] },
    ),
    fc.record({ v: fc.constantFrom(0, 3, '2', null, 1.5), ts, seq, metrics: metrics(v1ValueArb) }, optional),
  );
};

/** JSON text with the prototype traps spelled as own keys, which no object literal can express. */
const trapKeysArb = fc.constantFrom('__proto__', 'constructor', 'prototype');

describe('the pure ingest path is total', () => {
  it('any bytes: never throws; accepted readings are canonical, rejections carry a known reason', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1024 }), contextArb, (bytes, c) => {
        ingest(bytes, contextOf(c));
      }),
      runs(2_000),
    );
  });

  it('any JSON value: the same', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), contextArb, (value, c) => {
        ingest(Buffer.from(JSON.stringify(value) ?? 'null'), contextOf(c));
      }),
      runs(2_000),
    );
  });

  it('text near JSON (numbers past double range, deep nesting, stray bytes): the same', () => {
    const fragment = fc.constantFrom(
      '{',
      '}',
      '[',
      ']',
      ',',
      ':',
      '"metrics"',
      '"v"',
      '"ts"',
      '"a"',
      '1e309',
      '-1e309',
      '1e308',
      'NaN',
      'null',
      'true',
      '"\\u0000"',
      '"\\ud800"',
      '\u00ff',
    );
    const deep = fc.integer({ min: 1, max: 20_000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`);
    fc.assert(
      fc.property(fc.array(fc.oneof(fragment, deep), { maxLength: 40 }), contextArb, (parts, c) => {
        ingest(Buffer.from(parts.join('')), contextOf(c));
      }),
      runs(500),
    );
  });

  it('valid JSON with a value nested up to 20,000 deep in any field: the same', () => {
    // JSON.parse copes with any depth; JSON.stringify and other recursive code throw a RangeError.
    const templates = [
      (d: string) => d,
      (d: string) => `[${d},{"metrics":{"a":1}}]`,
      (d: string) => `{"v":${d},"metrics":{"a":1}}`,
      (d: string) => `{"ts":${d},"metrics":{"a":1}}`,
      (d: string) => `{"seq":${d},"metrics":{"a":1}}`,
      (d: string) => `{"metrics":${d}}`,
      (d: string) => `{"metrics":{"a":${d}}}`,
      (d: string) => `{"v":2,"metrics":{"a":{"value":${d}}}}`,
      (d: string) => `{"v":2,"metrics":{"a":{"value":1,"unit":${d}}}}`,
      (d: string) => `{"metrics":{"a":1},"firmware":${d}}`,
    ];
    const nested = fc
      .tuple(fc.integer({ min: 1, max: 20_000 }), fc.boolean())
      .map(([n, objects]) =>
        objects ? `${'{"a":'.repeat(n)}1${'}'.repeat(n)}` : `${'['.repeat(n)}${']'.repeat(n)}`,
      );
    fc.assert(
      fc.property(fc.constantFrom(...templates), nested, contextArb, (template, d, c) => {
        ingest(Buffer.from(template(d)), contextOf(c));
      }),
      runs(200),
    );
  });
});

describe('nothing the contract forbids is accepted', () => {
  it('readings shaped like the contract: what is accepted is exactly what was sent, canonicalised', () => {
    fc.assert(
      fc.property(
        contextArb.chain((c) =>
          fc.tuple(
            fc.constant(c),
            fc.oneof(
              readingArb(c.receivedAtMs),
              fc.array(readingArb(c.receivedAtMs), { minLength: 1, maxLength: 4 }),
            ),
          ),
        ),
        ([c, value]) => {
          const ctx = contextOf(c);
          for (const { raw, event } of ingest(Buffer.from(JSON.stringify(value)), ctx)) {
            const reading = raw as {
              v?: unknown;
              ts?: unknown;
              seq?: unknown;
              metrics: Record<string, unknown>;
            };
            // No metric silently dropped or invented.
            expect(Object.keys(event.metrics).sort()).toEqual(Object.keys(reading.metrics).sort());
            expect(event.schemaVersion).toBe(reading.v ?? 1);
            expect(event.seq).toBe(reading.seq);
            if (reading.ts === undefined) expect(event.ts).toBe(ctx.receivedAtIso);
            else
              expect(Date.parse(event.ts)).toBe(
                typeof reading.ts === 'string' ? Date.parse(reading.ts) : Math.trunc(reading.ts as number),
              );
            for (const [name, sent] of Object.entries(reading.metrics)) {
              const value =
                typeof sent === 'object' && sent !== null ? (sent as { value: unknown }).value : sent;
              expect(typeof value === 'number' || typeof value === 'boolean').toBe(true);
              // Booleans are 1 and 0, in the unit sent; a unit other than the canonical one converts them.
              const number = typeof value === 'boolean' ? Number(value) : value;
              if (event.metrics[name]!.originalUnit === undefined)
                expect(event.metrics[name]!.value).toBe(number);
            }
          }
        },
      ),
      runs(1_000),
    );
  });

  it('a prototype key as a metric name refuses the reading; at top level it is ignored', () => {
    fc.assert(
      fc.property(
        trapKeysArb,
        fc.dictionary(fc.stringMatching(/^[a-z]{1,8}$/), fc.integer(), { minKeys: 0, maxKeys: 4 }),
        fc.boolean(),
        contextArb,
        (trap, others, v2, c) => {
          const ctx = contextOf(c);
          const entries = Object.entries(others).map(([k, n]) =>
            v2 ? `"${k}":{"value":${n}}` : `"${k}":${n}`,
          );
          const trapValue = v2 ? '{"value":1,"polluted":true}' : '{"polluted":true}';
          const version = v2 ? '"v":2,' : '';
          const inMetrics = `{${version}"metrics":{${[...entries, `"${trap}":${trapValue}`].join(',')}}}`;
          const [reading] = parseTelemetryPayload(
            Buffer.from(inMetrics),
            MAX_PAYLOAD_BYTES,
            MAX_READINGS,
          ).readings;
          expect(reading).toMatchObject({ ok: false, reason: 'METRIC_NAME_INVALID' });

          if (entries.length === 0) return;
          const atTop = `{"${trap}":{"polluted":true,"v":2},${version}"metrics":{${entries.join(',')}}}`;
          const accepted = ingest(Buffer.from(atTop), ctx);
          expect(accepted).toHaveLength(1);
          expect(JSON.stringify(accepted[0]!.event)).not.toContain('polluted');
          expect(({} as Record<string, unknown>).polluted).toBeUndefined();
        },
      ),
      runs(300),
    );
  });
});

describe('the topic parser is total', () => {
  const level = fc.oneof(
    fc.constantFrom(
      'devices',
      'telemetry',
      'status',
      'commands',
      'dev-1',
      '',
      '+',
      '#',
      '$SYS',
      '\u0000',
      'a\u0000',
    ),
    fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
    fc.string({ maxLength: 70 }),
  );
  const topicArb = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.string({ unit: 'binary', maxLength: 100 }),
    fc.array(level, { minLength: 1, maxLength: 6 }).map((levels) => levels.join('/')),
  );

  it('any string: never throws; what it accepts is under devices/{valid id}/ and rebuilds to itself', () => {
    fc.assert(
      fc.property(topicArb, (topic) => {
        const parsed = parseDeviceTopic(topic);
        if (parsed === undefined) return;
        expect(DEVICE_ID_PATTERN.test(parsed.deviceId)).toBe(true);
        expect(topic.startsWith(`devices/${parsed.deviceId}/`)).toBe(true);
        // [MQTT-1.5.3-2] no topic holding U+0000 is a device's.
        expect(topic.includes('\u0000')).toBe(false);
        if (parsed.kind === 'telemetry') expect(topic).toBe(telemetryTopic(parsed.deviceId));
        if (parsed.kind === 'status') expect(topic).toBe(statusTopic(parsed.deviceId));
        if (parsed.kind === 'commands') expect(topic).toBe(commandsTopic(parsed.deviceId, parsed.path));
        if (parsed.kind === 'other') {
          expect([telemetryTopic(parsed.deviceId), statusTopic(parsed.deviceId)]).not.toContain(topic);
          expect(topic.split('/')[2]).not.toBe(COMMANDS_LEAF);
        }
      }),
      runs(5_000),
    );
  });

  it('any string as a subscription filter: an owner only for filters inside that device’s commands', () => {
    fc.assert(
      fc.property(topicArb, (filter) => {
        const owner = commandsFilterOwner(filter);
        if (owner === undefined) return;
        expect(DEVICE_ID_PATTERN.test(owner)).toBe(true);
        expect(
          filter === `devices/${owner}/commands` || filter.startsWith(`devices/${owner}/commands/`),
        ).toBe(true);
      }),
      runs(5_000),
    );
  });
});
