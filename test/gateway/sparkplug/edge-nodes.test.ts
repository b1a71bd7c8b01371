import sparkplug from 'sparkplug-payload';
import type { UMetric } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { describe, expect, it } from 'vitest';
import { deviceTopic, nodeTopic, parseSparkplugTopic, type SparkplugTopic } from '../../../contract/index.js';
import { EdgeNodes } from '../../../gateway/sparkplug/edge-nodes.js';

const codec = sparkplug.get('spBv1.0')!;
const T0 = Date.parse('2026-12-06T12:00:00.000Z');
const LIMITS = {
  maxPayloadBytes: 65_536,
  maxMetricsPerBirth: 16,
  maxMetricsPerNode: 64,
  maxDevicesPerNode: 4,
  rebirthIntervalMs: 5_000,
};

type NodeOrDevice = Exclude<SparkplugTopic, { kind: 'state' }>;
const topic = (t: string) => parseSparkplugTopic(t) as NodeOrDevice;
const metrics: UMetric[] = [{ name: 'x', alias: 1, type: 'Double', value: 1 }];
const nbirth = (bdSeq: number) =>
  codec.encodePayload({
    timestamp: T0,
    seq: 0,
    metrics: [...metrics, { name: 'bdSeq', type: 'UInt64', value: bdSeq }],
  });
const ndeath = (bdSeq: number) =>
  codec.encodePayload({ timestamp: T0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: bdSeq }] });
const dbirth = (seq: number) => codec.encodePayload({ timestamp: T0, seq, metrics });

describe('EdgeNodes', () => {
  it('keeps one session per edge node across its connections; a taken-over connection’s will changes nothing', () => {
    const nodes = new EdgeNodes(LIMITS, () => T0);
    const first = {};
    const second = {};
    nodes.handle('acme', first, topic(nodeTopic('NBIRTH', 'g', 'edge-1')), nbirth(0));
    // The node reconnects (same client id, new connection) and is born again, with the same bdSeq
    // (as sparkplug-client does); then the first connection's will arrives.
    nodes.handle('acme', second, topic(nodeTopic('NBIRTH', 'g', 'edge-1')), nbirth(0));
    const will = nodes.handle('acme', first, topic(nodeTopic('NDEATH', 'g', 'edge-1')), ndeath(0));
    expect(will.parsed.readings[0]).toMatchObject({ reason: 'SPARKPLUG_BDSEQ_MISMATCH' });
    expect(will.presence).toEqual([]);
    expect(nodes.closed('acme', 'edge-1', first)).toEqual([]);
    expect(nodes.session('acme', 'edge-1')?.born).toBe(true);
    expect(nodes.size).toBe(1);
    expect(nodes.closed('acme', 'edge-1', second)).toEqual([
      { deviceId: 'edge-1', online: false, cause: 'connection lost' },
    ]);
    expect(nodes.size).toBe(0);
  });

  it('takes the NDEATH of the connection that sent the NBIRTH, and then its close changes nothing', () => {
    const nodes = new EdgeNodes(LIMITS, () => T0);
    const c = {};
    nodes.handle('acme', c, topic(nodeTopic('NBIRTH', 'g', 'edge-1')), nbirth(3));
    nodes.handle('acme', c, topic(deviceTopic('DBIRTH', 'g', 'edge-1', 'd1')), dbirth(1));
    const death = nodes.handle('acme', c, topic(nodeTopic('NDEATH', 'g', 'edge-1')), ndeath(3));
    expect(death.presence.map((p) => [p.deviceId, p.online])).toEqual([
      ['edge-1', false],
      ['d1', false],
    ]);
    expect(nodes.closed('acme', 'edge-1', c)).toEqual([]);
  });

  it('keeps tenants apart', () => {
    const nodes = new EdgeNodes(LIMITS, () => T0);
    nodes.handle('acme', {}, topic(nodeTopic('NBIRTH', 'g', 'edge-1')), nbirth(0));
    const other = nodes.handle('globex', {}, topic(nodeTopic('NDATA', 'g', 'edge-1')), dbirth(1));
    expect(other.parsed.readings[0]).toMatchObject({ reason: 'SPARKPLUG_NO_BIRTH' });
    expect(nodes.size).toBe(2);
  });

  it('refuses a message under another group than its NBIRTH’s, and starts afresh on an NBIRTH there', () => {
    const nodes = new EdgeNodes(LIMITS, () => T0);
    const c = {};
    nodes.handle('acme', c, topic(nodeTopic('NBIRTH', 'g1', 'edge-1')), nbirth(0));
    nodes.handle('acme', c, topic(deviceTopic('DBIRTH', 'g1', 'edge-1', 'd1')), dbirth(1));
    const stray = nodes.handle('acme', c, topic(deviceTopic('DDATA', 'g2', 'edge-1', 'd1')), dbirth(2));
    expect(stray.parsed.readings[0]).toMatchObject({ reason: 'TOPIC_UNKNOWN' });
    const moved = nodes.handle('acme', c, topic(nodeTopic('NBIRTH', 'g2', 'edge-1')), nbirth(1));
    expect(moved.presence).toEqual([
      { deviceId: 'd1', online: false, cause: 'NBIRTH' },
      { deviceId: 'edge-1', online: true, cause: 'NBIRTH' },
    ]);
    expect(moved.labels).toEqual({ sparkplug_group: 'g2', sparkplug_edge: 'edge-1' });
    expect(nodes.session('acme', 'edge-1')?.groupId).toBe('g2');
  });
});
