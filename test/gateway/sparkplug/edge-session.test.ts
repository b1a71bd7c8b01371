import fc from 'fast-check';
import sparkplug from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import proto from 'sparkplug-payload/lib/sparkplugPayloadProto.js';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../common/config.js';
import {
  CanonicalEvent,
  deviceTopic,
  nodeTopic,
  parseSparkplugTopic,
  type SparkplugDeviceType,
  type SparkplugNodeType,
} from '../../../contract/index.js';
import { GatewayConfigSchema } from '../../../gateway/config.js';
import { normaliseReading, type ReadingContext } from '../../../gateway/ingest/normalise.js';
import type { AcceptedReading } from '../../../gateway/ingest/parse-payload.js';
import {
  EdgeSession,
  type EdgeSessionLimits,
  edgeSessionLimits,
  type SparkplugOutcome,
} from '../../../gateway/sparkplug/edge-session.js';
import { shortestFloat32 } from '../../../gateway/sparkplug/payload.js';

/** Payloads are encoded by the real sparkplug-payload (Eclipse Tahu), as an edge node would. */
const codec = sparkplug.get('spBv1.0')!;
const encode = (p: UPayload) => codec.encodePayload(p);
/** Its generated protobuf code, for what its encoder cannot write: DATA metrics without a datatype. */
const RawPayload = proto.org.eclipse.tahu.protobuf.Payload;

const T0 = Date.parse('2026-12-06T12:00:00.000Z');
const LIMITS: EdgeSessionLimits = {
  maxPayloadBytes: 65_536,
  maxMetricsPerBirth: 16,
  maxMetricsPerNode: 24,
  maxDevicesPerNode: 2,
  rebirthIntervalMs: 5_000,
};

function edge(limits: Partial<EdgeSessionLimits> = {}) {
  let now = T0;
  const session = new EdgeSession('plant-1', 'edge-1', { ...LIMITS, ...limits }, () => now);
  let seq = 0;
  const send = (
    type: SparkplugNodeType | SparkplugDeviceType,
    payload: UPayload | Uint8Array,
    device?: string,
  ) => {
    const topic = parseSparkplugTopic(
      device === undefined
        ? nodeTopic(type as SparkplugNodeType, 'plant-1', 'edge-1')
        : deviceTopic(type as SparkplugDeviceType, 'plant-1', 'edge-1', device),
    )!;
    return session.handle(topic, payload instanceof Uint8Array ? payload : encode(payload));
  };
  return {
    session,
    send,
    advance: (ms: number) => {
      now += ms;
    },
    /** The next seq as the edge node counts (NBIRTH: 0). */
    next: () => {
      seq = (seq + 1) % 256;
      return seq;
    },
    setSeq: (s: number) => {
      seq = s;
    },
    nbirth: (metrics: UMetric[] = NODE_METRICS, bdSeq = 7) => {
      seq = 0;
      return send('NBIRTH', { timestamp: T0, seq: 0, metrics: [...metrics, bdSeqMetric(bdSeq)] });
    },
  };
}

const bdSeqMetric = (value: number): UMetric => ({ name: 'bdSeq', type: 'UInt64', value });
const engUnit = (unit: string) => ({ engUnit: { type: 'String' as const, value: unit } });

const NODE_METRICS: UMetric[] = [
  { name: 'Node Control/Rebirth', type: 'Boolean', value: false },
  { name: 'Properties/Hardware Make', type: 'String', value: 'acme' },
  { name: 'Inputs/Temperature', alias: 1, type: 'Float', value: 70.25, properties: engUnit('degF') },
  { name: 'Uptime', alias: 2, type: 'UInt64', value: 2 ** 40 + 1 },
  { name: 'Inputs/Door', alias: 3, type: 'Boolean', value: true },
  { name: 'Counter', alias: 4, type: 'Int64', value: -5 },
];

const PUMP_METRICS: UMetric[] = [
  { name: 'Outputs/Speed', alias: 10, type: 'Double', value: 1450, properties: engUnit('rpm') },
  { name: 'Setpoint', alias: 11, type: 'Int16', value: -20 },
  { name: 'Serial', alias: 12, type: 'String', value: 'SN-1' },
];

function accepted(out: SparkplugOutcome): AcceptedReading[] {
  return out.parsed.readings.filter((r): r is AcceptedReading => r.ok);
}

function rejection(out: SparkplugOutcome) {
  const r = out.parsed.readings[0];
  return r !== undefined && !r.ok && r.index === undefined ? r.reason : undefined;
}

describe('EdgeSession: births and data', () => {
  it('takes an NBIRTH: metrics, aliases, datatypes and units; its values are readings; the node is online', () => {
    const e = edge();
    const out = e.nbirth();
    expect(out.deviceId).toBe('edge-1');
    expect(out.labels).toEqual({ sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' });
    expect(out.presence).toEqual([{ deviceId: 'edge-1', online: true, cause: 'NBIRTH' }]);
    expect(out.rebirth).toBe(false);
    expect(out.skipped).toEqual({ control: 2, datatype: 1 });
    expect(accepted(out)).toEqual([
      {
        ok: true,
        index: 2,
        version: 2,
        reading: {
          ts: T0,
          metrics: [
            { name: 'Inputs.Temperature', value: 70.25, unit: 'degF' },
            { name: 'Uptime', value: 2 ** 40 + 1 },
            { name: 'Inputs.Door', value: 1 },
            { name: 'Counter', value: -5 },
          ],
        },
      },
    ]);
    expect(e.session.born).toBe(true);
    expect(e.session.definitions).toBe(7);
  });

  it('gives readings that the existing normalisation turns into canonical events, units converted', () => {
    const e = edge();
    const [reading] = accepted(e.nbirth());
    const out = e.send('NDATA', {
      timestamp: T0 + 1000,
      seq: e.next(),
      metrics: [{ alias: 1, type: 'Float', value: 212 }],
    });
    const ctx = (labels: Record<string, string>): ReadingContext => ({
      tenant: 'acme',
      deviceId: out.deviceId,
      labels: { ...labels, ...out.labels },
      receivedAtMs: T0 + 1500,
      receivedAtIso: new Date(T0 + 1500).toISOString(),
      publishName: () => 'p1',
      deduplicate: false,
      maxFutureMs: 60_000,
      maxAgeMs: 3_600_000,
    });
    const [data] = accepted(out);
    const normalised = normaliseReading(data!.reading, data!.version, data!.index, ctx({ type: 'plc' }));
    expect(normalised.ok).toBe(true);
    if (!normalised.ok) return;
    expect(CanonicalEvent.parse(normalised.event)).toEqual(normalised.event);
    expect(normalised.event).toMatchObject({
      deviceId: 'edge-1',
      ts: new Date(T0 + 1000).toISOString(),
      schemaVersion: 2,
      labels: { type: 'plc', sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' },
      metrics: { 'Inputs.Temperature': { value: 100, unit: 'degC', originalUnit: 'degF' } },
    });
    // Named by content and ts, as a JSON reading with ts and no seq: a rebirth repeating it is one event.
    expect(normalised.msgId).toMatch(/^acme\.edge-1\.h\./);
    const birth = normaliseReading(reading!.reading, 2, reading!.index, ctx({}));
    expect(birth.ok && birth.event.metrics.Uptime).toEqual({ value: 2 ** 40 + 1, unit: '' });
  });

  it('reads DATA by alias, by name, and without the datatype the spec says DATA should not carry', () => {
    const e = edge();
    e.nbirth();
    const byName = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [{ name: 'Counter', type: 'Int64', value: 9 }],
    });
    expect(accepted(byName)[0]!.reading.metrics).toEqual([{ name: 'Counter', value: 9 }]);
    const raw = RawPayload.encode({
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 1, floatValue: 68 },
        { alias: 3, booleanValue: false },
        { alias: 4, longValue: -7 },
      ],
    }).finish();
    expect(accepted(e.send('NDATA', raw))[0]!.reading.metrics).toEqual([
      { name: 'Inputs.Temperature', value: 68, unit: 'degF' },
      { name: 'Inputs.Door', value: 0 },
      { name: 'Counter', value: -7 },
    ]);
  });

  it('converts Int64 and UInt64 (Long) values, and 32-bit ones by their signedness', () => {
    const e = edge();
    const metrics: UMetric[] = [
      { name: 'big', alias: 1, type: 'UInt64', value: 2 ** 53 + 2 },
      { name: 'neg', alias: 2, type: 'Int64', value: -(2 ** 40) },
      { name: 'u32', alias: 3, type: 'UInt32', value: 3_000_000_000 },
      { name: 'i32', alias: 4, type: 'Int32', value: -2_000_000_000 },
      { name: 'i8', alias: 5, type: 'Int8', value: -5 },
      { name: 'u16', alias: 6, type: 'UInt16', value: 65_535 },
    ];
    const [reading] = accepted(e.nbirth(metrics));
    expect(reading!.reading.metrics.map((m) => m.value)).toEqual([
      2 ** 53 + 2,
      -(2 ** 40),
      3_000_000_000,
      -2_000_000_000,
      -5,
      65_535,
    ]);
    // Past 2^53 a double holds the nearest value: 2^53 + 1 is read as 2^53.
    const out = e.send('NDATA', {
      seq: e.next(),
      metrics: [{ alias: 1, type: 'UInt64', value: '9007199254740993' as never }],
    });
    expect(accepted(out)[0]!.reading.metrics[0]!.value).toBe(2 ** 53);
  });

  it('reads a Float as the decimal the edge node meant, not its float32’s expansion', () => {
    const e = edge();
    const [reading] = accepted(
      e.nbirth([
        { name: 'f', type: 'Float', value: 70.1 },
        { name: 'g', type: 'Float', value: -0.000123 },
        { name: 'h', type: 'Float', value: 16_777_217 }, // not a float32: the nearest is 16777216
        { name: 'd', type: 'Double', value: 70.1 },
      ]),
    );
    expect(reading!.reading.metrics.map((m) => m.value)).toEqual([70.1, -0.000123, 16_777_216, 70.1]);
  });

  it('never changes which float32 a Float is', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (f) => {
        expect(Math.fround(shortestFloat32(f))).toBe(f);
      }),
    );
    expect(shortestFloat32(-0)).toBe(-0);
  });

  it('dates each metric by its own timestamp, else the payload’s, else leaves the receive time to normalisation', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('NDATA', {
      timestamp: T0 + 5000,
      seq: e.next(),
      metrics: [
        { alias: 1, type: 'Float', value: 70, timestamp: T0 + 1000 },
        { alias: 4, type: 'Int64', value: 1 },
        { alias: 1, type: 'Float', value: 71, timestamp: T0 + 2000 },
        { alias: 2, type: 'UInt64', value: 5, timestamp: T0 + 1000 },
      ],
    });
    expect(accepted(out).map((r) => [r.index, r.reading.ts, r.reading.metrics.map((m) => m.name)])).toEqual([
      [0, T0 + 1000, ['Inputs.Temperature', 'Uptime']],
      [1, T0 + 5000, ['Counter']],
      [2, T0 + 2000, ['Inputs.Temperature']],
    ]);
    const undated = e.send('NDATA', { seq: e.next(), metrics: [{ alias: 4, type: 'Int64', value: 2 }] });
    expect(accepted(undated)[0]!.reading).toEqual({ metrics: [{ name: 'Counter', value: 2 }] });
  });

  it('puts one metric twice into two readings, never overwriting one value with another', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 4, type: 'Int64', value: 1 },
        { alias: 4, type: 'Int64', value: 2 },
      ],
    });
    expect(accepted(out).map((r) => r.reading.metrics)).toEqual([
      [{ name: 'Counter', value: 1 }],
      [{ name: 'Counter', value: 2 }],
    ]);
  });

  it('rejects a non-finite value or a datatype other than its birth’s, keeping the other metrics', () => {
    const e = edge();
    e.nbirth([
      { name: 'level', alias: 1, type: 'Double', value: 1 },
      { name: 'n', alias: 2, type: 'Int32', value: 1 },
    ]);
    const out = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 1, type: 'Double', value: Number.NaN },
        { alias: 2, type: 'Float', value: 1.5 },
        { alias: 2, type: 'Int32', value: 3 },
      ],
    });
    expect(out.parsed.batch).toBe(true);
    expect(out.parsed.readings.map((r) => (r.ok ? r.reading.metrics : [r.index, r.reason]))).toEqual([
      [0, 'VALUE_INVALID'],
      [1, 'VALUE_INVALID'],
      [{ name: 'n', value: 3 }],
    ]);
    expect(out.rebirth).toBe(false);
  });

  it('skips null and transient values, counted', () => {
    const e = edge();
    e.nbirth([
      { name: 'a', alias: 1, type: 'Double', value: 1 },
      { name: 'b', alias: 2, type: 'Double', value: 2, isTransient: true },
    ]);
    const out = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 1, type: 'Double', value: null },
        { alias: 2, type: 'Double', value: 3 },
        { alias: 1, type: 'Double', value: 4, isTransient: true },
      ],
    });
    expect(out.skipped).toEqual({ null: 1, transient: 2 });
    expect(out.parsed.readings).toEqual([]);
  });

  it('refuses metric names outside the contract at birth, once, and skips their data', () => {
    const e = edge();
    const out = e.nbirth([
      { name: 'Temperature (°C)', alias: 1, type: 'Double', value: 1 },
      { name: 'a/b', alias: 2, type: 'Double', value: 2 },
      { name: 'a.b', alias: 3, type: 'Double', value: 3 },
    ]);
    expect(out.parsed.readings.map((r) => (r.ok ? r.reading.metrics : [r.index, r.reason]))).toEqual([
      [0, 'METRIC_NAME_INVALID'],
      [{ name: 'a.b', value: 2 }],
      [2, 'METRIC_NAME_INVALID'],
    ]);
    const data = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 1, type: 'Double', value: 5 },
        { alias: 3, type: 'Double', value: 6 },
      ],
    });
    expect(data.parsed.readings).toEqual([]);
    expect(data.skipped).toEqual({ name: 2 });
  });
});

describe('EdgeSession: devices', () => {
  it('births two devices, stores their data under their own ids, and takes them offline on DDEATH', () => {
    const e = edge();
    e.nbirth();
    const pump = e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    expect(pump.deviceId).toBe('pump-1');
    expect(pump.labels).toEqual({ sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' });
    expect(pump.presence).toEqual([{ deviceId: 'pump-1', online: true, cause: 'DBIRTH' }]);
    expect(accepted(pump)[0]!.reading.metrics).toEqual([
      { name: 'Outputs.Speed', value: 1450, unit: 'rpm' },
      { name: 'Setpoint', value: -20 },
    ]);
    const valve = e.send(
      'DBIRTH',
      { timestamp: T0, seq: e.next(), metrics: [{ name: 'Open', alias: 10, type: 'Boolean', value: false }] },
      'valve-1',
    );
    expect(valve.presence).toEqual([{ deviceId: 'valve-1', online: true, cause: 'DBIRTH' }]);
    // The same alias means another metric on each device.
    const data = e.send(
      'DDATA',
      { timestamp: T0 + 1, seq: e.next(), metrics: [{ alias: 10, type: 'Boolean', value: true }] },
      'valve-1',
    );
    expect(data.deviceId).toBe('valve-1');
    expect(accepted(data)[0]!.reading.metrics).toEqual([{ name: 'Open', value: 1 }]);
    const death = e.send('DDEATH', { timestamp: T0 + 2, seq: e.next() }, 'pump-1');
    expect(death.presence).toEqual([{ deviceId: 'pump-1', online: false, cause: 'DDEATH' }]);
    const after = e.send(
      'DDATA',
      { timestamp: T0 + 3, seq: e.next(), metrics: [{ alias: 10, type: 'Double', value: 1 }] },
      'pump-1',
    );
    expect(rejection(after)).toBe('SPARKPLUG_NO_BIRTH');
    expect(after.rebirth).toBe(true);
  });

  it('refuses DDATA and DBIRTH before their births, asking for a rebirth', () => {
    const e = edge();
    const early = e.send('DBIRTH', { timestamp: T0, seq: 1, metrics: PUMP_METRICS }, 'pump-1');
    expect(rejection(early)).toBe('SPARKPLUG_NO_BIRTH');
    expect(early.rebirth).toBe(true);
    e.nbirth();
    const data = e.send(
      'DDATA',
      { timestamp: T0, seq: e.next(), metrics: [{ alias: 10, type: 'Double', value: 1 }] },
      'pump-1',
    );
    expect(rejection(data)).toBe('SPARKPLUG_NO_BIRTH');
    expect(data.deviceId).toBe('pump-1');
    expect(data.rebirth).toBe(false); // asked less than rebirthIntervalMs ago
  });

  it('refuses a device id outside the device-id grammar, without a rebirth, and counts its seq', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'Pump 1');
    expect(rejection(out)).toBe('SPARKPLUG_ID_INVALID');
    expect(out.deviceId).toBe('edge-1');
    expect(out.rebirth).toBe(false);
    expect(rejection(e.send('NDATA', { timestamp: T0, seq: e.next(), metrics: [] }))).toBeUndefined();
  });

  it('takes the node offline when its new NBIRTH is refused', () => {
    const e = edge();
    e.nbirth();
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    const bad = e.send('NBIRTH', { timestamp: T0, seq: 0, metrics: NODE_METRICS }); // no bdSeq
    expect(rejection(bad)).toBe('SPARKPLUG_BAD_PAYLOAD');
    expect(bad.presence).toEqual([
      { deviceId: 'pump-1', online: false, cause: 'NBIRTH' },
      { deviceId: 'edge-1', online: false, cause: 'NBIRTH' },
    ]);
    expect(e.session.born).toBe(false);
  });

  it('ends every device birth with a new NBIRTH: offline until its DBIRTH', () => {
    const e = edge();
    e.nbirth();
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    const again = e.nbirth();
    expect(again.presence).toEqual([
      { deviceId: 'pump-1', online: false, cause: 'NBIRTH' },
      { deviceId: 'edge-1', online: true, cause: 'NBIRTH' },
    ]);
    const data = e.send(
      'DDATA',
      { timestamp: T0, seq: e.next(), metrics: [{ alias: 10, type: 'Double', value: 1 }] },
      'pump-1',
    );
    expect(rejection(data)).toBe('SPARKPLUG_NO_BIRTH');
  });
});

describe('EdgeSession: seq, bdSeq and rebirth', () => {
  it('follows seq across node and device messages, wrapping 255 → 0', () => {
    const e = edge();
    e.nbirth();
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    for (let i = 0; i < 300; i++) {
      const out =
        i % 2 === 0
          ? e.send('NDATA', {
              timestamp: T0 + i,
              seq: e.next(),
              metrics: [{ alias: 4, type: 'Int64', value: i }],
            })
          : e.send(
              'DDATA',
              { timestamp: T0 + i, seq: e.next(), metrics: [{ alias: 11, type: 'Int16', value: 1 }] },
              'pump-1',
            );
      expect(rejection(out)).toBeUndefined();
      expect(accepted(out)).toHaveLength(1);
    }
  });

  it('refuses a seq gap and all that follows until the NBIRTH, asking for a rebirth at most once an interval', () => {
    const e = edge();
    e.nbirth();
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    e.next(); // a message lost on the way
    const gap = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [{ alias: 4, type: 'Int64', value: 1 }],
    });
    expect(rejection(gap)).toBe('SPARKPLUG_SEQ_GAP');
    expect(gap.parsed.readings[0]).toMatchObject({ detail: 'seq 3 where 2 was next' });
    expect(gap.rebirth).toBe(true);
    expect(e.session.born).toBe(false);
    // Even in order, nothing is read by tables that may be stale.
    const next = e.send(
      'DDATA',
      { timestamp: T0, seq: e.next(), metrics: [{ alias: 11, type: 'Int16', value: 1 }] },
      'pump-1',
    );
    expect(rejection(next)).toBe('SPARKPLUG_NO_BIRTH');
    expect(next.rebirth).toBe(false);
    e.advance(5_000);
    expect(e.send('NDATA', { timestamp: T0, seq: e.next(), metrics: [] }).rebirth).toBe(true);
    const reborn = e.nbirth();
    expect(rejection(reborn)).toBeUndefined();
    expect(
      e.send('NDATA', { timestamp: T0, seq: e.next(), metrics: [{ alias: 4, type: 'Int64', value: 2 }] })
        .parsed.readings,
    ).toHaveLength(1);
  });

  it('refuses data before the NBIRTH, asking for a rebirth', () => {
    const e = edge();
    const out = e.send('NDATA', { timestamp: T0, seq: 4, metrics: [{ alias: 4, type: 'Int64', value: 1 }] });
    expect(rejection(out)).toBe('SPARKPLUG_NO_BIRTH');
    expect(out.rebirth).toBe(true);
    expect(out.presence).toEqual([]);
  });

  it('refuses data naming an alias its birth did not define, whole, asking for a rebirth', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [
        { alias: 4, type: 'Int64', value: 1 },
        { alias: 99, type: 'Int64', value: 1 },
      ],
    });
    expect(rejection(out)).toBe('SPARKPLUG_UNKNOWN_METRIC');
    expect(out.parsed.readings).toHaveLength(1);
    expect(out.rebirth).toBe(true);
    // The rest of the node's tables stay: the next message in order is read.
    expect(
      accepted(
        e.send('NDATA', { timestamp: T0, seq: e.next(), metrics: [{ alias: 4, type: 'Int64', value: 2 }] }),
      ),
    ).toHaveLength(1);
  });

  it('refuses bytes that are no Sparkplug payload as a gap: rebirth, and nothing read until it', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('NDATA', Buffer.from('{"metrics":{"a":1}}'));
    expect(rejection(out)).toBe('SPARKPLUG_BAD_PAYLOAD');
    expect(out.rebirth).toBe(true);
    expect(e.session.born).toBe(false);
  });

  it('refuses a compressed payload, an NBIRTH without bdSeq, a missing or out-of-range seq', () => {
    const compressed = edge();
    compressed.nbirth();
    const c = compressed.send('NDATA', { uuid: 'SPBV1.0_COMPRESSED', body: new Uint8Array([1, 2]), seq: 1 });
    expect(c.parsed.readings[0]).toMatchObject({
      reason: 'SPARKPLUG_BAD_PAYLOAD',
      detail: 'compressed payloads are not supported',
    });
    const noBdSeq = edge().send('NBIRTH', { timestamp: T0, seq: 0, metrics: NODE_METRICS });
    expect(noBdSeq.parsed.readings[0]).toMatchObject({
      reason: 'SPARKPLUG_BAD_PAYLOAD',
      detail: 'NBIRTH without a bdSeq metric',
    });
    expect(noBdSeq.rebirth).toBe(true);
    const e = edge();
    e.nbirth();
    expect(rejection(e.send('NDATA', { timestamp: T0, metrics: [] }))).toBe('SPARKPLUG_BAD_PAYLOAD');
    const high = edge();
    high.nbirth();
    expect(high.send('NDATA', { timestamp: T0, seq: 256, metrics: [] }).parsed.readings[0]).toMatchObject({
      detail: 'seq 256, 0 to 255 required',
    });
  });

  it('refuses births a rebirth cannot mend: no name, an unknown datatype, an alias twice', () => {
    const raw = RawPayload.encode({
      timestamp: T0,
      seq: 0,
      metrics: [
        { name: 'bdSeq', datatype: 8, longValue: 1 },
        { datatype: 9, floatValue: 1 },
      ],
    }).finish();
    expect(edge().send('NBIRTH', raw).parsed.readings[0]).toMatchObject({
      detail: 'NBIRTH metric 1: no name',
    });
    const untyped = RawPayload.encode({
      timestamp: T0,
      seq: 0,
      metrics: [
        { name: 'bdSeq', datatype: 8, longValue: 1 },
        { name: 'x', floatValue: 1 },
      ],
    }).finish();
    expect(edge().send('NBIRTH', untyped).parsed.readings[0]).toMatchObject({
      detail: 'NBIRTH metric 1: "x" has no known datatype',
    });
    const twice = edge().nbirth([
      { name: 'a', alias: 1, type: 'Double', value: 1 },
      { name: 'b', alias: 1, type: 'Double', value: 1 },
    ]);
    expect(twice.parsed.readings[0]).toMatchObject({
      reason: 'SPARKPLUG_BAD_PAYLOAD',
      detail: 'NBIRTH metric 1: alias 1 used twice',
    });
  });

  it('holds no name over 256 characters nor more of a unit than can be in the units table', () => {
    const long = edge().nbirth([{ name: 'x'.repeat(257), type: 'Double', value: 1 }]);
    expect(long.parsed.readings[0]).toMatchObject({
      reason: 'SPARKPLUG_BAD_PAYLOAD',
      detail: 'NBIRTH metric 0: a name of 257 characters, at most 256 allowed',
    });
    const e = edge();
    e.nbirth([{ name: 'x', alias: 1, type: 'Double', value: 1, properties: engUnit('u'.repeat(1000)) }]);
    expect(e.session.definition(undefined, 'x')?.unit).toBe('u'.repeat(33));
  });

  it('takes an NDEATH only with its NBIRTH’s bdSeq: node and devices offline', () => {
    const e = edge();
    e.nbirth(NODE_METRICS, 7);
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    const stale = e.send('NDEATH', { timestamp: T0, metrics: [bdSeqMetric(6)] });
    expect(stale.parsed.readings[0]).toMatchObject({
      reason: 'SPARKPLUG_BDSEQ_MISMATCH',
      detail: "NDEATH bdSeq 6, the NBIRTH's is 7",
    });
    expect(stale.presence).toEqual([]);
    expect(stale.rebirth).toBe(false);
    expect(e.session.born).toBe(true);
    const death = e.send('NDEATH', { timestamp: T0, metrics: [bdSeqMetric(7)] });
    expect(rejection(death)).toBeUndefined();
    expect(death.presence).toEqual([
      { deviceId: 'edge-1', online: false, cause: 'NDEATH' },
      { deviceId: 'pump-1', online: false, cause: 'NDEATH' },
    ]);
    expect(e.session.born).toBe(false);
    expect(e.session.connectionLost()).toEqual([]);
  });

  it('takes a lost connection as the NDEATH it did not send', () => {
    const e = edge();
    e.nbirth();
    e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    expect(e.session.connectionLost()).toEqual([
      { deviceId: 'edge-1', online: false, cause: 'connection lost' },
      { deviceId: 'pump-1', online: false, cause: 'connection lost' },
    ]);
  });

  it('refuses commands published by the edge node itself', () => {
    const e = edge();
    e.nbirth();
    const out = e.send('NCMD', { timestamp: T0, metrics: [] });
    expect(rejection(out)).toBe('TOPIC_UNKNOWN');
  });
});

describe('EdgeSession: bounds', () => {
  it('refuses a birth of more metrics than SPARKPLUG_MAX_METRICS_PER_BIRTH, and its data, without a rebirth', () => {
    const e = edge({ maxMetricsPerBirth: 4 });
    const out = e.nbirth(); // 6 metrics and bdSeq
    expect(rejection(out)).toBe('SPARKPLUG_LIMIT');
    expect(out.limit).toBe('SPARKPLUG_MAX_METRICS_PER_BIRTH');
    expect(out.rebirth).toBe(false);
    expect(e.session.definitions).toBe(0);
    const data = e.send('NDATA', {
      timestamp: T0,
      seq: e.next(),
      metrics: [{ alias: 4, type: 'Int64', value: 1 }],
    });
    expect(rejection(data)).toBe('SPARKPLUG_LIMIT');
    expect(data.rebirth).toBe(false);
  });

  it('holds at most SPARKPLUG_MAX_METRICS_PER_NODE definitions for a node and its devices', () => {
    const e = edge({ maxMetricsPerNode: 10 });
    e.nbirth(); // 7
    const pump = e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1'); // 3: 10
    expect(rejection(pump)).toBeUndefined();
    const valve = e.send(
      'DBIRTH',
      { timestamp: T0, seq: e.next(), metrics: [{ name: 'Open', type: 'Boolean', value: true }] },
      'valve-1',
    );
    expect(valve.limit).toBe('SPARKPLUG_MAX_METRICS_PER_NODE');
    expect(e.session.definitions).toBe(10);
    // A rebirth of a device replaces its own definitions: not counted twice.
    const again = e.send('DBIRTH', { timestamp: T0, seq: e.next(), metrics: PUMP_METRICS }, 'pump-1');
    expect(rejection(again)).toBeUndefined();
  });

  it('remembers at most SPARKPLUG_MAX_DEVICES_PER_NODE devices, and refuses the others without a rebirth', () => {
    const e = edge({ maxDevicesPerNode: 2 });
    e.nbirth();
    for (const d of ['d1', 'd2'])
      e.send(
        'DBIRTH',
        { timestamp: T0, seq: e.next(), metrics: [{ name: 'x', type: 'Double', value: 1 }] },
        d,
      );
    const third = e.send(
      'DBIRTH',
      { timestamp: T0, seq: e.next(), metrics: [{ name: 'x', type: 'Double', value: 1 }] },
      'd3',
    );
    expect(third.limit).toBe('SPARKPLUG_MAX_DEVICES_PER_NODE');
    expect(third.rebirth).toBe(false);
    const data = e.send(
      'DDATA',
      { timestamp: T0, seq: e.next(), metrics: [{ name: 'x', type: 'Double', value: 1 }] },
      'd3',
    );
    expect(rejection(data)).toBe('SPARKPLUG_LIMIT');
    expect(data.rebirth).toBe(false);
  });

  it('takes its bounds from the gateway configuration', () => {
    expect(edgeSessionLimits(loadConfig(GatewayConfigSchema, {}))).toEqual({
      maxPayloadBytes: 65_536,
      maxMetricsPerBirth: 512,
      maxMetricsPerNode: 4_096,
      maxDevicesPerNode: 256,
      rebirthIntervalMs: 5_000,
    });
  });

  it('refuses a payload over maxPayloadBytes before decoding it', () => {
    const e = edge({ maxPayloadBytes: 64 });
    const out = e.send('NDATA', new Uint8Array(65));
    expect(rejection(out)).toBe('PAYLOAD_TOO_LARGE');
    expect(out.limit).toBe('MAX_PAYLOAD_BYTES');
  });
});
