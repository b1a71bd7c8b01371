import { createServer, type Server } from 'node:net';
import { Aedes, type AedesPublishPacket } from 'aedes';
import { newClient } from 'sparkplug-client';
import type { UMetric } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type CanonicalEvent, parseSparkplugTopic } from '../../../contract/index.js';
import { normaliseReading } from '../../../gateway/ingest/normalise.js';
import type { AcceptedReading } from '../../../gateway/ingest/parse-payload.js';
import { rebirthCommand } from '../../../gateway/sparkplug/commands.js';
import {
  EdgeSession,
  type SparkplugOutcome,
  type SparkplugPresence,
} from '../../../gateway/sparkplug/edge-session.js';

/**
 * Eclipse Tahu's own edge node client (sparkplug-client, over its mqtt 4) against a plain aedes
 * broker, with the EdgeSession fed what the broker receives, in order, as the gateway will feed it
 * once wired (README, Sparkplug B). The "network" can lose one message, to make a seq gap.
 */
describe('EdgeSession fed by the real sparkplug-client', () => {
  let aedes: Aedes;
  let server: Server;
  let port: number;
  const session = new EdgeSession(
    'plant-1',
    'edge-1',
    {
      maxPayloadBytes: 65_536,
      maxMetricsPerBirth: 64,
      maxMetricsPerNode: 256,
      maxDevicesPerNode: 8,
      rebirthIntervalMs: 1_000,
    },
    Date.now,
  );
  const outcomes: { topic: string; out: SparkplugOutcome }[] = [];
  const events: CanonicalEvent[] = [];
  const presence: SparkplugPresence[] = [];
  let loseNext: string | undefined;

  /** What the gateway will do with a message of an edge node. */
  function feed(packet: AedesPublishPacket) {
    const topic = parseSparkplugTopic(packet.topic);
    if (topic === undefined || topic.kind === 'state' || topic.type === 'NCMD' || topic.type === 'DCMD')
      return;
    if (loseNext !== undefined && packet.topic.includes(loseNext)) {
      loseNext = undefined;
      return;
    }
    const out = session.handle(topic, packet.payload as Buffer);
    outcomes.push({ topic: packet.topic, out });
    presence.push(...out.presence);
    const receivedAtMs = Date.now();
    for (const r of out.parsed.readings.filter((r): r is AcceptedReading => r.ok)) {
      const n = normaliseReading(r.reading, r.version, r.index, {
        tenant: 'acme',
        deviceId: out.deviceId,
        labels: out.labels,
        receivedAtMs,
        receivedAtIso: new Date(receivedAtMs).toISOString(),
        publishName: () => 'p',
        deduplicate: false,
        maxFutureMs: 60_000,
        maxAgeMs: 3_600_000,
      });
      if (n.ok) events.push(n.event);
    }
    if (out.rebirth) {
      const cmd = rebirthCommand(session.groupId, session.edgeNodeId, Date.now());
      aedes.publish(
        {
          cmd: 'publish',
          topic: cmd.topic,
          payload: Buffer.from(cmd.payload),
          qos: 0,
          retain: false,
          dup: false,
        },
        () => {},
      );
    }
  }

  beforeAll(async () => {
    aedes = new Aedes();
    await aedes.listen();
    aedes.on('publish', (packet) => feed(packet));
    server = createServer((socket) => aedes.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('takes births with aliases and units, data by alias, a lost message (rebirth) and a death', async () => {
    const client = newClient({
      serverUrl: `tcp://127.0.0.1:${port}`,
      username: 'edge-1',
      password: 'unused',
      groupId: 'plant-1',
      edgeNode: 'edge-1',
      clientId: 'edge-1',
      publishDeath: true,
      mqttOptions: { reconnectPeriod: 0 },
    });
    const pumpBirth = (): UMetric[] => [
      {
        name: 'Outputs/Speed',
        alias: 10,
        type: 'Double',
        value: 1450,
        properties: { engUnit: { type: 'String', value: 'rpm' } },
      },
      { name: 'Running', alias: 11, type: 'Boolean', value: true },
    ];
    let births = 0;
    let stopped = false;
    const publishBirths = () => {
      births++;
      client.publishNodeBirth({
        timestamp: Date.now(),
        metrics: [
          { name: 'Node Control/Rebirth', type: 'Boolean', value: false },
          {
            name: 'Inputs/Temperature',
            alias: 1,
            type: 'Float',
            value: 68,
            properties: { engUnit: { type: 'String', value: 'degF' } },
          },
        ],
      });
      client.publishDeviceBirth('pump-1', { timestamp: Date.now(), metrics: pumpBirth() });
      client.publishDeviceBirth('valve-1', {
        timestamp: Date.now(),
        metrics: [{ name: 'Position', alias: 20, type: 'UInt8', value: 40 }],
      });
    };
    client.on('birth', publishBirths);
    client.on('ncmd', (payload) => {
      if (payload.metrics?.some((m) => m.name === 'Node Control/Rebirth' && m.value === true))
        publishBirths();
    });
    try {
      await vi.waitFor(() => expect(session.born && presence.filter((p) => p.online)).toHaveLength(3), {
        timeout: 5_000,
      });
      client.publishDeviceData('pump-1', {
        timestamp: Date.now(),
        metrics: [{ alias: 10, type: 'Double', value: 1500 }],
      });
      client.publishNodeData({ timestamp: Date.now(), metrics: [{ alias: 1, type: 'Float', value: 212 }] });
      await vi.waitFor(() =>
        expect(events.map((e) => e.deviceId)).toEqual(['edge-1', 'pump-1', 'valve-1', 'pump-1', 'edge-1']),
      );
      expect(events[3]).toMatchObject({
        deviceId: 'pump-1',
        labels: { sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' },
        metrics: { 'Outputs.Speed': { value: 25, unit: 'Hz', originalUnit: 'rpm' } },
      });
      expect(events[4]!.metrics['Inputs.Temperature']).toEqual({
        value: 100,
        unit: 'degC',
        originalUnit: 'degF',
      });

      // The network loses a DDATA: the next message is a gap, the session asks for a rebirth, and the
      // client's births come again.
      loseNext = 'DDATA/edge-1/valve-1';
      client.publishDeviceData('valve-1', {
        timestamp: Date.now(),
        metrics: [{ alias: 20, type: 'UInt8', value: 41 }],
      });
      client.publishDeviceData('pump-1', {
        timestamp: Date.now(),
        metrics: [{ alias: 11, type: 'Boolean', value: false }],
      });
      await vi.waitFor(() => expect(births).toBe(2));
      const gap = outcomes.find((o) => o.out.parsed.readings[0]?.ok === false);
      expect(gap?.out.parsed.readings[0]).toMatchObject({ reason: 'SPARKPLUG_SEQ_GAP' });
      expect(gap?.out.rebirth).toBe(true);
      await vi.waitFor(() => expect(session.born).toBe(true));
      client.publishDeviceData('valve-1', {
        timestamp: Date.now(),
        metrics: [{ alias: 20, type: 'UInt8', value: 42 }],
      });
      await vi.waitFor(() =>
        expect(events.at(-1)).toMatchObject({ deviceId: 'valve-1', metrics: { Position: { value: 42 } } }),
      );
      // Neither the lost reading nor the one refused after the gap was guessed at.
      expect(events.some((e) => e.metrics.Position?.value === 41 || e.metrics.Running?.value === 0)).toBe(
        false,
      );

      presence.length = 0;
      stopped = true;
      client.stop(); // publishes its NDEATH, bdSeq 0 as its NBIRTH said
      await vi.waitFor(() =>
        expect(presence).toEqual([
          { deviceId: 'edge-1', online: false, cause: 'NDEATH' },
          { deviceId: 'pump-1', online: false, cause: 'NDEATH' },
          { deviceId: 'valve-1', online: false, cause: 'NDEATH' },
        ]),
      );
    } finally {
      if (!stopped) client.stop();
    }
  });
});
