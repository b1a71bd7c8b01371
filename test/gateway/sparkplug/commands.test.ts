import sparkplug from 'sparkplug-payload';
import { describe, expect, it } from 'vitest';
import { deviceTopic, parseSparkplugTopic } from '../../../contract/index.js';
import {
  MAX_WRITES_PER_COMMAND,
  metricWriteCommand,
  parseMetricWrites,
  rebirthCommand,
  sparkplugCommandFor,
} from '../../../gateway/sparkplug/commands.js';
import { EdgeSession } from '../../../gateway/sparkplug/edge-session.js';

const codec = sparkplug.get('spBv1.0')!;
const T0 = Date.parse('2026-12-06T12:00:00.000Z');

function bornEdge() {
  const session = new EdgeSession(
    'plant-1',
    'edge-1',
    {
      maxPayloadBytes: 65_536,
      maxMetricsPerBirth: 64,
      maxMetricsPerNode: 256,
      maxDevicesPerNode: 8,
      rebirthIntervalMs: 5_000,
    },
    () => T0,
  );
  const birth = (topic: string, metrics: Parameters<typeof codec.encodePayload>[0]['metrics'], seq: number) =>
    session.handle(parseSparkplugTopic(topic)!, codec.encodePayload({ timestamp: T0, seq, metrics }));
  birth(
    'spBv1.0/plant-1/NBIRTH/edge-1',
    [
      { name: 'bdSeq', type: 'UInt64', value: 0 },
      { name: 'Node Control/Reboot', type: 'Boolean', value: false },
    ],
    0,
  );
  birth(
    deviceTopic('DBIRTH', 'plant-1', 'edge-1', 'pump-1'),
    [
      { name: 'Outputs/Speed', alias: 10, type: 'UInt16', value: 1450 },
      { name: 'Outputs/Valve', alias: 11, type: 'Boolean', value: false },
      { name: 'Label', alias: 12, type: 'String', value: 'P1' },
      { name: 'Serial', alias: 13, type: 'Bytes', value: new Uint8Array([1]) },
    ],
    1,
  );
  return session;
}

describe('Sparkplug commands', () => {
  it('asks for a rebirth with NCMD Node Control/Rebirth = true', () => {
    const cmd = rebirthCommand('plant-1', 'edge-1', T0);
    expect(cmd.topic).toBe('spBv1.0/plant-1/NCMD/edge-1');
    const payload = codec.decodePayload(cmd.payload);
    expect(payload.metrics).toEqual([{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }]);
    expect(Number(payload.timestamp)).toBe(T0);
  });

  it('writes device metrics as DCMD with their birth datatypes, by Sparkplug or contract name', () => {
    const cmd = metricWriteCommand(
      bornEdge(),
      'pump-1',
      { 'Outputs.Speed': 1200, 'Outputs/Valve': true },
      T0,
    );
    expect(cmd.ok).toBe(true);
    if (!cmd.ok) return;
    expect(cmd.topic).toBe('spBv1.0/plant-1/DCMD/edge-1/pump-1');
    expect(codec.decodePayload(cmd.payload).metrics).toEqual([
      { name: 'Outputs/Speed', type: 'UInt16', value: 1200 },
      { name: 'Outputs/Valve', type: 'Boolean', value: true },
    ]);
  });

  it('writes node metrics as NCMD, controls included', () => {
    const cmd = metricWriteCommand(bornEdge(), undefined, { 'Node Control/Reboot': true }, T0);
    expect(cmd.ok && cmd.topic).toBe('spBv1.0/plant-1/NCMD/edge-1');
  });

  it.each([
    [
      { 'Outputs/Speed': 70_000 },
      "metric 'Outputs/Speed' is UInt16: the value must be an integer from 0 to 65535",
    ],
    [
      { 'Outputs/Speed': 1.5 },
      "metric 'Outputs/Speed' is UInt16: the value must be an integer from 0 to 65535",
    ],
    [{ 'Outputs/Valve': 1 }, "metric 'Outputs/Valve' is Boolean: the value must be true or false"],
    [{ Label: 3 }, "metric 'Label' is String: the value must be a string"],
    [{ Serial: 'x' }, "metric 'Serial' is Bytes: the value must be a datatype commands cannot write"],
    [{ Nope: 1 }, "no metric 'Nope' in the DBIRTH in force"],
    [{}, 'no metric to write'],
  ])('refuses %j rather than send what the edge node would refuse', (writes, detail) => {
    expect(metricWriteCommand(bornEdge(), 'pump-1', writes, T0)).toEqual({ ok: false, detail });
  });

  it('reads a command body as a JSON object of writes', () => {
    const body = (text: string) => parseMetricWrites(Buffer.from(text));
    const parsed = body('{"Outputs/Valve": true, "Outputs.Speed": 1200}');
    expect(parsed.ok && { ...parsed.writes }).toEqual({ 'Outputs/Valve': true, 'Outputs.Speed': 1200 });
    if (parsed.ok) expect(metricWriteCommand(bornEdge(), 'pump-1', parsed.writes, T0).ok).toBe(true);
    expect(body('[1]')).toMatchObject({ ok: false });
    expect(body('not json')).toMatchObject({ ok: false });
    expect(body('{"a": {"b": 1}}')).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/^metric 'a'/),
    });
    const many = JSON.stringify(
      Object.fromEntries(Array.from({ length: MAX_WRITES_PER_COMMAND + 1 }, (_, i) => [`m${i}`, i])),
    );
    expect(body(many)).toMatchObject({ ok: false, detail: '65 writes, at most 64 in one command' });
    // `__proto__` is a write like any (refused then as unknown), never the object's prototype.
    const proto = body('{"__proto__": 1}');
    expect(proto.ok && Object.keys(proto.writes)).toEqual(['__proto__']);
    if (proto.ok)
      expect(metricWriteCommand(bornEdge(), 'pump-1', proto.writes, T0)).toMatchObject({ ok: false });
  });

  it('finds whom a command from NATS is for: the edge node (NCMD), a device it speaks for (DCMD), or neither', () => {
    const session = bornEdge();
    const nodes = {
      session: (tenant: string, id: string) => (tenant === 'acme' && id === 'edge-1' ? session : undefined),
      sessionsOfDevice: (tenant: string, id: string) =>
        tenant === 'acme' && session.hasDevice(id) ? [session] : [],
    };
    const body = (o: unknown) => Buffer.from(JSON.stringify(o));
    const speaks = (edge: string, device: string) => edge === 'edge-1' && device === 'pump-1';
    const forDevice = sparkplugCommandFor(
      nodes,
      speaks,
      'acme',
      'pump-1',
      body({ 'Outputs/Valve': true }),
      T0,
    );
    expect(forDevice).toMatchObject({ ok: true, topic: 'spBv1.0/plant-1/DCMD/edge-1/pump-1' });
    const forNode = sparkplugCommandFor(
      nodes,
      speaks,
      'acme',
      'edge-1',
      body({ 'Node Control/Reboot': true }),
      T0,
    );
    expect(forNode).toMatchObject({ ok: true, topic: 'spBv1.0/plant-1/NCMD/edge-1' });
    // Not a device the edge node speaks for (the registry says), another tenant's, unknown: not Sparkplug.
    expect(sparkplugCommandFor(nodes, () => false, 'acme', 'pump-1', body({}), T0)).toBeUndefined();
    expect(sparkplugCommandFor(nodes, speaks, 'other', 'pump-1', body({}), T0)).toBeUndefined();
    expect(sparkplugCommandFor(nodes, speaks, 'acme', 'meter-1', body({}), T0)).toBeUndefined();
    expect(sparkplugCommandFor(nodes, speaks, 'acme', 'pump-1', body([1]), T0)).toEqual({
      ok: false,
      detail: 'a Sparkplug command is a JSON object of metric writes',
    });
  });
});
