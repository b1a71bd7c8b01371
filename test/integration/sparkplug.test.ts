import type { NatsConnection } from '@nats-io/nats-core';
import { newClient } from 'sparkplug-client';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import {
  type CanonicalEvent,
  commandsSubject,
  DEADLETTER_STREAM,
  type DeadLetter,
  PRESENCE_STREAM,
  type PresenceEvent,
  REBIRTH_METRIC,
  TELEMETRY_MEASUREMENT,
  TELEMETRY_STREAM,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessor, type Processor } from '../../processors/processor.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream, waitForStream } from '../kit/streams.js';
import { startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

/**
 * Issue 14, part 2: Eclipse Tahu's `sparkplug-client` as an edge node (a registry gateway device)
 * with two devices, through the gateway, the processors and into the TSDB: births, data by alias
 * with units converted, a seq gap (rebirth asked for and answered, the gap dead-lettered), a
 * device's death and the node's; presence follows the births and deaths.
 */

const GROUP = 'plant-1';
const EDGE = 'edge-1';

let nats: NatsServer;
let tsdb: Tsdb;
let nc: NatsConnection;
let gateway: Gateway;
let processor: Processor;
let edge: ProvisionedDevice;

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, { LIVE_VIEW: 'false', GATEWAY_ID: 'gw-spb' }));
  // `npm run devices -- add edge-1 --tenant acme --gateway`
  edge = await provision(nc, EDGE, 'acme', {}, { children: 'any' });
  await provision(nc, 'direct-1', 'acme'); // a device of its own: no edge node may speak for it
  const config = loadConfig(ProcessorConfigSchema, {
    NATS_URL: nats.url,
    INFLUX_URL: tsdb.url,
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    IDLE_TIMEOUT: '1s',
    CHECKPOINT_INTERVAL: '200ms',
    LEASE_TTL: '3s',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  });
  processor = await createProcessor(config, createLogger('processors', config.LOG_LEVEL));
}, 60_000);

afterAll(async () => {
  await processor?.close();
  await gateway?.close();
  await nc?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
});

async function samples(device: string, field: string): Promise<number[]> {
  const found = await tsdb.readSamples({ measurement: TELEMETRY_MEASUREMENT, field, tags: { device } });
  // Rounded: the TSDB keeps 12 significant digits.
  return found.map((s) => Math.round(s.value * 1e6) / 1e6);
}

describe('sparkplug-client as an edge node through the gateway', () => {
  it('stores births and data under the mapped ids, asks for a rebirth on a gap, and follows deaths', async () => {
    const client = newClient({
      serverUrl: `tcp://127.0.0.1:${gateway.ports.mqtt}`,
      username: EDGE,
      password: edge.secret,
      groupId: GROUP,
      edgeNode: EDGE,
      clientId: EDGE,
      publishDeath: true,
      mqttOptions: { reconnectPeriod: 0 },
    });
    const now = () => Date.now();
    let births = 0;
    const ncmds: UPayload[] = [];
    const publishBirths = () => {
      births++;
      client.publishNodeBirth({
        timestamp: now(),
        metrics: [
          { name: REBIRTH_METRIC, type: 'Boolean', value: false },
          {
            name: 'Inputs/Temperature',
            alias: 1,
            type: 'Float',
            value: 68,
            properties: { engUnit: { type: 'String', value: 'degF' } },
          },
        ],
      });
      const pump: UMetric[] = [
        {
          name: 'Outputs/Speed',
          alias: 10,
          type: 'Double',
          value: 1450,
          properties: { engUnit: { type: 'String', value: 'rpm' } },
        },
        { name: 'Running', alias: 11, type: 'Boolean', value: true },
      ];
      client.publishDeviceBirth('pump-1', { timestamp: now(), metrics: pump });
      client.publishDeviceBirth('valve-1', {
        timestamp: now(),
        metrics: [{ name: 'Position', alias: 20, type: 'UInt8', value: 40 }],
      });
    };
    client.on('birth', publishBirths);
    client.on('ncmd', (payload: UPayload) => {
      ncmds.push(payload);
      if (payload.metrics?.some((m) => m.name === REBIRTH_METRIC && m.value === true)) publishBirths();
    });
    const dcmds: { device: string; payload: UPayload }[] = [];
    client.on('dcmd', (device: string, payload: UPayload) => dcmds.push({ device, payload }));
    let stopped = false;
    try {
      // Births: the node and both devices online, their birth values stored.
      const online = await waitForStream<PresenceEvent>(
        nc,
        PRESENCE_STREAM,
        (m) => ['pump-1', 'valve-1'].every((d) => m.some((e) => e.data.deviceId === d)),
        15_000,
      );
      for (const device of ['pump-1', 'valve-1'])
        expect(online.find((e) => e.data.deviceId === device)?.data).toMatchObject({
          tenant: 'acme',
          type: 'connected',
          clientId: EDGE,
        });
      expect(online.map((e) => e.data)).toContainEqual(
        expect.objectContaining({
          deviceId: EDGE,
          type: 'status',
          status: { sparkplug: 'NBIRTH', online: true },
        }),
      );

      // Data by alias, with units converted: 1500 rpm is 25 Hz, 212 °F is 100 °C.
      client.publishDeviceData('pump-1', {
        timestamp: now(),
        metrics: [{ alias: 10, type: 'Double', value: 1500 }],
      });
      client.publishNodeData({ timestamp: now(), metrics: [{ alias: 1, type: 'Float', value: 212 }] });
      // A Sparkplug device id that is a direct registry device: refused, never stored as it.
      client.publishDeviceBirth('direct-1', {
        timestamp: now(),
        metrics: [{ name: 'Position', alias: 30, type: 'UInt8', value: 7 }],
      });

      // Commands: metric writes as DCMD and NCMD, checked against the births; a wrong one refused.
      const request = async (device: string, body: unknown) =>
        (await nc.request(commandsSubject('acme', device), JSON.stringify(body), { timeout: 5_000 })).json();
      expect(await request('pump-1', { Running: false })).toEqual({ delivered: true, status: 'delivered' });
      expect(await request(EDGE, { 'Inputs/Temperature': 70.5 })).toEqual({
        delivered: true,
        status: 'delivered',
      });
      expect(await request('valve-1', { Position: 300 })).toEqual({
        delivered: false,
        status: 'refused',
        error: "metric 'Position' is UInt8: the value must be an integer from 0 to 255",
      });
      await vi.waitFor(() => expect(dcmds).toHaveLength(1), { timeout: 5_000 });
      expect(dcmds[0]!.device).toBe('pump-1');
      expect(dcmds[0]!.payload.metrics).toEqual([
        expect.objectContaining({ name: 'Running', type: 'Boolean', value: false }),
      ]);
      await vi.waitFor(() => expect(ncmds).toHaveLength(1), { timeout: 5_000 });
      expect(ncmds[0]!.metrics).toEqual([
        expect.objectContaining({ name: 'Inputs/Temperature', type: 'Float', value: 70.5 }),
      ]);

      // A seq gap: the client skips three numbers, as if three messages were lost on the way.
      await vi.waitFor(async () => expect(await samples(EDGE, 'Inputs.Temperature')).toContain(100), {
        timeout: 30_000,
        interval: 200,
      });
      (client as unknown as { seq: number }).seq += 3;
      client.publishDeviceData('valve-1', {
        timestamp: now(),
        metrics: [{ alias: 20, type: 'UInt8', value: 41 }],
      });
      await vi.waitFor(() => expect(births).toBe(2), { timeout: 10_000 });
      expect(ncmds[1]?.metrics).toEqual([expect.objectContaining({ name: REBIRTH_METRIC, value: true })]);
      client.publishDeviceData('valve-1', {
        timestamp: now(),
        metrics: [{ alias: 20, type: 'UInt8', value: 42 }],
      });

      await vi.waitFor(async () => expect(await samples('valve-1', 'Position')).toContain(42), {
        timeout: 30_000,
        interval: 200,
      });
      await tsdb.settle();
      expect(await samples('pump-1', 'Outputs.Speed')).toEqual(expect.arrayContaining([24.166667, 25]));
      expect(await samples(EDGE, 'Inputs.Temperature')).toEqual(expect.arrayContaining([20, 100]));
      // The message after the gap was not guessed at.
      expect(await samples('valve-1', 'Position')).not.toContain(41);
      expect(await samples('direct-1', 'Position')).toEqual([]);

      // Each event under its Sparkplug id, with the Sparkplug labels (and a device's registration).
      const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
      const of = (device: string) => events.filter((e) => e.data.deviceId === device).map((e) => e.data);
      expect(new Set(events.map((e) => e.data.deviceId))).toEqual(new Set([EDGE, 'pump-1', 'valve-1']));
      expect(of(EDGE)[0]).toMatchObject({
        tenant: 'acme',
        labels: { sparkplug_group: GROUP, sparkplug_edge: EDGE },
      });
      for (const device of ['pump-1', 'valve-1'])
        expect(of(device)[0]).toMatchObject({
          tenant: 'acme',
          labels: { via: EDGE, sparkplug_group: GROUP, sparkplug_edge: EDGE },
        });
      expect(of('pump-1').some((e) => e.metrics['Outputs.Speed']?.originalUnit === 'rpm')).toBe(true);

      const letters = await waitForStream<DeadLetter>(nc, DEADLETTER_STREAM, (m) => m.length >= 2);
      expect(letters.map((l) => [l.data.reason, l.data.deviceId])).toEqual(
        expect.arrayContaining([
          ['CHILD_DENIED', EDGE],
          ['SPARKPLUG_SEQ_GAP', 'valve-1'],
        ]),
      );

      // A device's death, then the node's (its NDEATH, then a clean disconnect).
      client.publishDeviceDeath('valve-1', { timestamp: now(), metrics: [] });
      await waitForStream<PresenceEvent>(nc, PRESENCE_STREAM, (m) =>
        m.some((e) => e.data.deviceId === 'valve-1' && e.data.type === 'disconnected'),
      );
      stopped = true;
      client.stop();
      const all = await waitForStream<PresenceEvent>(
        nc,
        PRESENCE_STREAM,
        (m) => m.some((e) => e.data.deviceId === EDGE && e.data.type === 'disconnected'),
        15_000,
      );
      const story = (device: string) =>
        all
          .map((e) => e.data)
          .filter((e) => e.deviceId === device)
          .map((e) =>
            e.type === 'status' ? `status ${JSON.stringify(e.status)}` : `${e.type} ${e.reason ?? ''}`.trim(),
          );
      // Births, the rebirth (devices offline until their DBIRTH), the deaths.
      expect(story('valve-1')).toEqual([
        'connected',
        'disconnected Sparkplug NBIRTH',
        'connected',
        'disconnected Sparkplug DDEATH',
      ]);
      expect(story('pump-1')).toEqual([
        'connected',
        'disconnected Sparkplug NBIRTH',
        'connected',
        'disconnected Sparkplug NDEATH',
      ]);
      expect(story(EDGE)).toEqual([
        'connected',
        'status {"sparkplug":"NBIRTH","online":true}',
        'status {"sparkplug":"NBIRTH","online":true}',
        'status {"sparkplug":"NDEATH","online":false}',
        'disconnected',
      ]);
      expect(story('direct-1')).toEqual([]);
    } finally {
      if (!stopped) client.stop();
    }
  }, 90_000);

  it('takes the node and its devices offline by its will when the connection drops', async () => {
    const before = (await readStream<PresenceEvent>(nc, PRESENCE_STREAM)).length;
    const client = newClient({
      serverUrl: `tcp://127.0.0.1:${gateway.ports.mqtt}`,
      username: EDGE,
      password: edge.secret,
      groupId: GROUP,
      edgeNode: EDGE,
      clientId: EDGE,
      mqttOptions: { reconnectPeriod: 0 },
    });
    const events = async () => (await readStream<PresenceEvent>(nc, PRESENCE_STREAM)).slice(before);
    client.on('birth', () => {
      client.publishNodeBirth({ timestamp: Date.now(), metrics: [] });
      client.publishDeviceBirth('pump-1', {
        timestamp: Date.now(),
        metrics: [{ name: 'Running', alias: 11, type: 'Boolean', value: true }],
      });
    });
    try {
      await vi.waitFor(
        async () =>
          expect(
            (await events()).some((e) => e.data.deviceId === 'pump-1' && e.data.type === 'connected'),
          ).toBe(true),
        { timeout: 10_000, interval: 100 },
      );
      // The network drops: no DISCONNECT, the broker publishes the NDEATH will.
      (client as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
      await vi.waitFor(
        async () =>
          expect((await events()).some((e) => e.data.deviceId === EDGE && e.data.type === 'lost')).toBe(true),
        { timeout: 10_000, interval: 100 },
      );
      const story = (await events())
        .map((e) => e.data)
        .filter((e) => e.type !== 'connected')
        .map((e) => [e.deviceId, e.type, e.type === 'status' ? e.status : e.reason]);
      expect(story).toEqual([
        [EDGE, 'status', { sparkplug: 'NBIRTH', online: true }],
        [EDGE, 'status', { sparkplug: 'NDEATH', online: false }],
        ['pump-1', 'disconnected', 'Sparkplug NDEATH'],
        [EDGE, 'lost', expect.any(String)],
      ]);
    } finally {
      client.stop();
    }
  }, 30_000);
});
