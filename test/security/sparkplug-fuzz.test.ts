import fc from 'fast-check';
import proto from 'sparkplug-payload/lib/sparkplugPayloadProto.js';
import { describe, expect, it } from 'vitest';
import {
  CanonicalEvent,
  deviceTopic,
  isMetricName,
  MAX_METRICS_PER_READING,
  nodeTopic,
  parseSparkplugTopic,
  SPARKPLUG_DEVICE_TYPES,
  SPARKPLUG_NODE_TYPES,
} from '../../contract/index.js';
import { REJECTION_REASONS } from '../../contract/rejections.js';
import { normaliseReading } from '../../gateway/ingest/normalise.js';
import {
  EdgeSession,
  type EdgeSessionLimits,
  type SparkplugOutcome,
} from '../../gateway/sparkplug/edge-session.js';

/**
 * Property tests of the Sparkplug path (bytes → EdgeSession → readings → canonical events): whatever
 * an edge node sends, in whatever order, the session never throws, holds no more than its bounds,
 * and every reading is a canonical event or a rejection with a known reason code. Payloads are
 * random bytes, and random but well-formed protobuf from sparkplug-payload's own generated code.
 * Replay a failure with FC_SEED=<seed> FC_PATH=<path>, as test/security/fuzz.test.ts.
 */
const SEED = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED);
const PATH = process.env.FC_PATH;
const runs = (numRuns: number) => ({
  numRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
});

const Payload = proto.org.eclipse.tahu.protobuf.Payload;
/** protobufjs takes uint64 fields as decimal strings too: the whole 64-bit range is generated. */
const encode = (m: object) => Payload.encode(m as proto.org.eclipse.tahu.protobuf.IPayload).finish();
const T0 = Date.parse('2026-12-06T12:00:00.000Z');
const LIMITS: EdgeSessionLimits = {
  maxPayloadBytes: 4_096,
  maxMetricsPerBirth: 8,
  maxMetricsPerNode: 12,
  maxDevicesPerNode: 2,
  rebirthIntervalMs: 1_000,
};

const type = fc.constantFrom(...SPARKPLUG_NODE_TYPES, ...SPARKPLUG_DEVICE_TYPES);
const rarely = fc.oneof(
  { arbitrary: fc.constant(false), weight: 9 },
  { arbitrary: fc.constant(true), weight: 1 },
);
const mostly = fc.oneof(
  { arbitrary: fc.constant(true), weight: 9 },
  { arbitrary: fc.constant(false), weight: 1 },
);
/** Mostly data and device births, as an edge node sends them. */
const likelyType = fc.oneof(
  { arbitrary: fc.constantFrom('NDATA' as const, 'DDATA' as const, 'DBIRTH' as const), weight: 6 },
  { arbitrary: type, weight: 1 },
);
const deviceId = fc.constantFrom('d1', 'd2', 'd3', 'Bad id');
const topicOf = (
  t: (typeof SPARKPLUG_NODE_TYPES)[number] | (typeof SPARKPLUG_DEVICE_TYPES)[number],
  d: string,
) =>
  parseSparkplugTopic(
    (SPARKPLUG_NODE_TYPES as readonly string[]).includes(t)
      ? nodeTopic(t as (typeof SPARKPLUG_NODE_TYPES)[number], 'g', 'edge-1')
      : deviceTopic(t as (typeof SPARKPLUG_DEVICE_TYPES)[number], 'g', 'edge-1', d),
  )!;

const metric = fc.record(
  {
    name: fc.oneof(
      {
        arbitrary: fc.constantFrom('a', 'b/c', 'd e', 'temperature', 'x.y', 'Node Control/Rebirth'),
        weight: 6,
      },
      { arbitrary: fc.string({ maxLength: 12 }), weight: 1 },
      { arbitrary: fc.constant('bdSeq'), weight: 1 },
    ),
    alias: fc.nat(9),
    // Mostly telemetry datatypes, sometimes any other or none known.
    datatype: fc.oneof(
      { arbitrary: fc.integer({ min: 1, max: 11 }), weight: 12 },
      { arbitrary: fc.nat(23), weight: 1 },
    ),
    timestamp: fc.oneof(fc.constant(T0), fc.nat()),
    isNull: rarely,
    isTransient: rarely,
    intValue: fc.nat(),
    longValue: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((b) => b.toString()),
    floatValue: fc.float(),
    doubleValue: fc.double(),
    booleanValue: fc.boolean(),
    stringValue: fc.string({ maxLength: 8 }),
  },
  {
    requiredKeys: ['datatype', 'intValue', 'longValue', 'floatValue', 'doubleValue', 'booleanValue', 'name'],
  },
);

const message = fc.record(
  {
    timestamp: fc.oneof(fc.constant(T0), fc.nat()),
    seq: fc.oneof(fc.nat(3), fc.nat(300)),
    metrics: fc.oneof(
      fc.array(metric, { maxLength: 10 }),
      // Mostly plausible: named once each, aliased by position, as births define and data use them.
      fc
        .uniqueArray(metric, { selector: (m) => m.name, maxLength: 6 })
        .map((ms) => ms.map((m, i) => ({ ...m, alias: i }))),
      // Data as the spec wants it: by alias, without a datatype.
      fc
        .uniqueArray(metric, { selector: (m) => m.name, maxLength: 6 })
        .map((ms) => ms.map(({ datatype: _, name: __, ...m }, i) => ({ ...m, alias: i }))),
    ),
  },
  { requiredKeys: [] },
);

function check(out: SparkplugOutcome, session: EdgeSession) {
  expect(session.definitions).toBeLessThanOrEqual(LIMITS.maxMetricsPerNode);
  for (const r of out.parsed.readings) {
    if (!r.ok) {
      expect(Object.hasOwn(REJECTION_REASONS, r.reason)).toBe(true);
      continue;
    }
    expect(r.reading.metrics.length).toBeLessThanOrEqual(MAX_METRICS_PER_READING);
    for (const m of r.reading.metrics) {
      expect(isMetricName(m.name)).toBe(true);
      expect(Number.isFinite(m.value)).toBe(true);
    }
    const n = normaliseReading(r.reading, r.version, r.index, {
      tenant: 'acme',
      deviceId: out.deviceId,
      labels: out.labels,
      receivedAtMs: T0,
      receivedAtIso: new Date(T0).toISOString(),
      publishName: () => 'p',
      deduplicate: true,
      maxFutureMs: 60_000,
      maxAgeMs: 3_600_000,
    });
    if (n.ok) expect(CanonicalEvent.safeParse(n.event).success).toBe(true);
    else expect(Object.hasOwn(REJECTION_REASONS, n.reason)).toBe(true);
  }
}

describe('Sparkplug edge session, fuzzed', () => {
  it('takes any bytes on any of its topics, in any order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(type, deviceId, fc.uint8Array({ maxLength: 64 })), { maxLength: 20 }),
        (msgs) => {
          const session = new EdgeSession('g', 'edge-1', LIMITS, () => T0);
          for (const [t, d, bytes] of msgs) check(session.handle(topicOf(t, d), bytes), session);
        },
      ),
      runs(200),
    );
  });

  it('takes any well-formed Sparkplug payloads, in any order, and keeps to its bounds', () => {
    let accepted = 0;
    fc.assert(
      fc.property(
        // Names and aliases mostly unique, as a birth that is not refused has them.
        fc
          .uniqueArray(
            metric.filter((m) => m.name !== undefined && m.name !== 'bdSeq'),
            { selector: (m) => m.name, maxLength: 7 },
          )
          .map((ms) => ms.map((m, i) => ({ ...m, alias: i }))),
        fc.array(fc.tuple(likelyType, deviceId, message, mostly), { maxLength: 20 }),
        (birth, msgs) => {
          let now = T0;
          let seq = 0;
          const session = new EdgeSession('g', 'edge-1', LIMITS, () => now);
          const nbirth = {
            timestamp: T0,
            seq: 0,
            metrics: [{ name: 'bdSeq', datatype: 8, longValue: 1 }, ...birth],
          };
          const born = () => {
            seq = 0;
            check(session.handle(topicOf('NBIRTH', ''), encode(nbirth)), session);
          };
          born();
          for (const [t, d, m, inOrder] of msgs) {
            now += 1_000;
            // Mostly in order, so that births and data are read past the seq check.
            if (inOrder) m.seq = t === 'NBIRTH' ? 0 : (seq + 1) % 256;
            if (typeof m.seq === 'number') seq = m.seq;
            const out = session.handle(topicOf(t, d), encode(m));
            check(out, session);
            accepted += out.parsed.readings.filter((r) => r.ok).length;
            // An edge node answers a rebirth request with its births.
            if (out.rebirth) born();
          }
        },
      ),
      runs(300),
    );
    expect(accepted).toBeGreaterThan(100);
  });
});
