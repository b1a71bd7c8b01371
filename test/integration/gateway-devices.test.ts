import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import {
  type CanonicalEvent,
  commandsSubject,
  DEADLETTER_STREAM,
  type DeadLetter,
  PRESENCE_STREAM,
  type PresenceEvent,
  statusTopic,
  TELEMETRY_MEASUREMENT,
  TELEMETRY_STREAM,
  telemetrySubject,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { createProcessor, type Processor } from '../../processors/processor.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type Mosquitto, publishLocal, startMosquitto } from '../kit/mosquitto.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { runScript } from '../kit/processes.js';
import { readStream, waitForStream } from '../kit/streams.js';
import { startVictoriaMetrics, type Tsdb } from '../kit/victoria-metrics.js';

/**
 * Issue 14, part 1: a site's real mosquitto (Debian's 2.0.11) bridged to the gateway with the README's
 * config, as a gateway device; downstream devices publish to the site's broker with mosquitto_pub.
 * Every reading each of them had acknowledged is in the TSDB under its own id, the bridge stays
 * connected (a refused reading does not wedge it), commands reach a child through it, and all of it
 * again after the gateway restarted under a `cleansession false` bridge.
 */

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/** The README's bridge config, pointed at this gateway with this secret, listening on the kit's port. */
function readmeBridgeConfig(gatewayPort: number, secret: string): string {
  const section = README.slice(README.indexOf('### Gateway devices'), README.indexOf('\n## Security\n'));
  const block = /```conf\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined) throw new Error('no bridge config in the README');
  expect(block).toContain('listener 1883 127.0.0.1');
  expect(block).toContain('address <gateway>:1883');
  return block
    .replace('listener 1883 127.0.0.1', 'listener {port} 127.0.0.1')
    .replace('address <gateway>:1883', `address 127.0.0.1:${gatewayPort}`)
    .replace('<secret of site-1>', secret);
}

const CHILDREN = ['meter-a', 'meter-b', 'meter-c'];
const S = 1_000;
/** A minute ago, whole seconds: inside TS_MAX_AGE. */
const T0 = Math.floor(Date.now() / S) * S - 60 * S;

let nats: NatsServer;
let tsdb: Tsdb;
let nc: NatsConnection;
let gateway: Gateway;
let gatewayPort: number;
let processor: Processor;
let site: Mosquitto;
let siteDevice: ProvisionedDevice;

async function gatewayOn(port: number): Promise<Gateway> {
  const started = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    MQTT_PORT: String(port),
    GATEWAY_ID: 'gw-bridge',
  });
  return started.gateway;
}

async function acceptedConnects(): Promise<number> {
  const metric = await gateway.metrics.registry.getSingleMetric('gateway_mqtt_connects_total')?.get();
  return metric?.values.find((v) => v.labels.result === 'accepted')?.value ?? 0;
}

/** Waits until `predicate` holds, polling. */
async function until(what: string, predicate: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${site?.log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Readings k.. of each child, with ts and seq, through the site's broker. */
async function publishReadings(from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) {
    for (const [k, child] of CHILDREN.entries()) {
      const reading = { ts: T0 + i * S, seq: i, metrics: { temperature: 100 * k + i } };
      await publishLocal(site.port, telemetryTopic(child), JSON.stringify(reading));
    }
  }
}

async function storedTemperatures(child: string): Promise<number[]> {
  const samples = await tsdb.readSamples({
    measurement: TELEMETRY_MEASUREMENT,
    field: 'temperature',
    tags: { device: child },
  });
  return samples.map((s) => s.value).sort((a, b) => a - b);
}

beforeAll(async () => {
  [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
  nc = await natsClient(nats.url);
  gateway = await gatewayOn(0);
  gatewayPort = gateway.ports.mqtt;
  siteDevice = await provision(nc, 'site-1', 'acme', {}, { children: 'any' });
  await provision(nc, 'direct-1', 'acme'); // a device of its own: no gateway device may speak for it
  await provision(nc, 'elsewhere-1', 'other'); // another tenant's
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
  site = await startMosquitto(readmeBridgeConfig(gatewayPort, siteDevice.secret));
  await until('the bridge to connect', async () => (await acceptedConnects()) === 1);
}, 60_000);

afterAll(async () => {
  await site?.dispose();
  await processor?.close();
  await gateway?.close();
  await nc?.close();
  await Promise.all([nats?.dispose(), tsdb?.dispose()]);
});

describe('a site mosquitto bridged with the README config', () => {
  it("stores every child's readings under its own id; a refused one does not wedge the bridge", async () => {
    await publishReadings(0, 3);
    // Refused: a direct device and another tenant's. Acknowledged and dead-lettered, the bridge goes on.
    await publishLocal(site.port, telemetryTopic('direct-1'), '{"metrics":{"temperature":1}}');
    await publishLocal(site.port, telemetryTopic('elsewhere-1'), '{"metrics":{"temperature":1}}');
    await publishReadings(3, 3);
    for (const [k, child] of CHILDREN.entries()) {
      const expected = Array.from({ length: 6 }, (_, i) => 100 * k + i);
      await tsdb.waitForSamples(
        { measurement: TELEMETRY_MEASUREMENT, field: 'temperature', tags: { device: child } },
        (s) => s.length >= 6,
        30_000,
      );
      expect(await storedTemperatures(child)).toEqual(expected);
    }
    // Each event is the child's: its id, tenant and (auto-registered) labels.
    const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
    expect(events).toHaveLength(18);
    for (const e of events) {
      expect(e.subject).toBe(telemetrySubject('acme', e.data.deviceId));
      expect(e.data).toMatchObject({ tenant: 'acme', labels: { via: 'site-1' } });
    }
    const letters = await waitForStream<DeadLetter>(nc, DEADLETTER_STREAM, (m) => m.length >= 2);
    expect(letters.map((l) => [l.data.reason, l.data.deviceId, l.data.topic])).toEqual([
      ['CHILD_DENIED', 'site-1', telemetryTopic('direct-1')],
      ['CHILD_DENIED', 'site-1', telemetryTopic('elsewhere-1')],
    ]);
    expect((await storedTemperatures('direct-1')).length).toBe(0);
    // One connection all along: nothing refused closed it.
    expect(await acceptedConnects()).toBe(1);
    expect(site.log()).not.toMatch(/Connection lost|Socket error/i);
  });

  it("takes the bridge's $SYS notification as the gateway device's status, and children's presence through it", async () => {
    await publishLocal(site.port, statusTopic('meter-a'), '{"state":"ok"}');
    const events = await waitForStream<PresenceEvent>(nc, PRESENCE_STREAM, (m) =>
      m.some((e) => e.data.deviceId === 'meter-a' && e.data.type === 'status'),
    );
    const of = (device: string) => events.filter((e) => e.data.deviceId === device).map((e) => e.data);
    expect(of('site-1')).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: 'connected', clientId: 'site-1' }),
        expect.objectContaining({ type: 'status', status: 1 }),
      ]),
    );
    for (const child of CHILDREN)
      expect(of(child)).toContainEqual(expect.objectContaining({ type: 'connected', clientId: 'site-1' }));
    expect(of('meter-a')).toContainEqual(
      expect.objectContaining({ type: 'status', status: { state: 'ok' } }),
    );
  });

  it('delivers a command for a child through the bridge to the site', async () => {
    const sub = spawn(
      'mosquitto_sub',
      [
        '-h',
        '127.0.0.1',
        '-p',
        String(site.port),
        '-q',
        '1',
        '-C',
        '1',
        '-t',
        'devices/meter-b/commands/#',
        '-v',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    sub.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<void>((resolve) => sub.once('exit', () => resolve()));
    try {
      await new Promise((r) => setTimeout(r, 500)); // mosquitto_sub subscribed
      const reply = await nc.request(commandsSubject('acme', 'meter-b', ['reboot']), '{"delay":1}', {
        timeout: 5_000,
      });
      expect(reply.json()).toEqual({ delivered: true, status: 'delivered' });
      await until('the command at the site', () => out.includes('\n') || out.length > 0, 10_000);
      expect(out.trim()).toBe('devices/meter-b/commands/reboot {"delay":1}');
    } finally {
      if (sub.pid !== undefined && sub.exitCode === null) process.kill(sub.pid, 'SIGKILL');
      await exited;
    }
  });

  it('with cleansession false, goes on after a gateway restart: what queued on the site arrives once', async () => {
    const before = await acceptedConnects();
    await gateway.close();
    // The children were online through the bridge's connection: they go offline with it.
    const gone = await waitForStream<PresenceEvent>(nc, PRESENCE_STREAM, (m) =>
      CHILDREN.every((c) =>
        m.some((e) => e.data.deviceId === c && e.data.type !== 'connected' && e.data.type !== 'status'),
      ),
    );
    for (const child of CHILDREN)
      expect(
        gone
          .map((e) => e.data)
          .filter((e) => e.deviceId === child)
          .at(-1),
      ).toMatchObject({
        type: 'lost',
        clientId: 'site-1',
      });
    // Published on the site while the gateway is away: queued by the bridge, a refused one first,
    // which the bridge sends first again after reconnecting; it must not stop the others.
    await publishLocal(site.port, telemetryTopic('direct-1'), '{"metrics":{"temperature":2}}');
    await publishReadings(6, 2);
    gateway = await gatewayOn(gatewayPort);
    await until('the bridge to reconnect', async () => (await acceptedConnects()) >= 1, 40_000);
    await publishReadings(8, 2);
    for (const [k, child] of CHILDREN.entries()) {
      const expected = Array.from({ length: 10 }, (_, i) => 100 * k + i);
      await tsdb.waitForSamples(
        { measurement: TELEMETRY_MEASUREMENT, field: 'temperature', tags: { device: child } },
        (s) => s.length >= 10,
        30_000,
      );
      await tsdb.settle();
      expect(await storedTemperatures(child)).toEqual(expected);
    }
    // Reconnected once, and stays: no loop.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await acceptedConnects()).toBe(1);
    expect(before).toBe(1);
    const letters = await readStream<DeadLetter>(nc, DEADLETTER_STREAM);
    expect(letters.map((l) => [l.data.reason, l.data.topic])).toEqual([
      ['CHILD_DENIED', telemetryTopic('direct-1')],
      ['CHILD_DENIED', telemetryTopic('elsewhere-1')],
      ['CHILD_DENIED', telemetryTopic('direct-1')],
    ]);
  });
});

describe('npm run devices', () => {
  it('adds a gateway device of any device of its tenant, or of those listed, and lists the role', async () => {
    const env = { NATS_URL: nats.url };
    const added = await runScript(
      'gateway/devices-cli.ts',
      ['add', 'site-9', '--tenant', 'acme', '--children', 'a,b', '--json'],
      env,
    );
    expect(added.code).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ id: 'site-9', gateway: { children: ['a', 'b'] } });
    const listed = await runScript('gateway/devices-cli.ts', ['list'], env);
    expect(listed.stdout).toMatch(/^site-1\tacme\tenabled\t\tgateway$/m);
    expect(listed.stdout).toMatch(/^site-9\tacme\tenabled\t\tgateway of a,b$/m);
    expect(listed.stdout).toMatch(/^meter-a\tacme\tenabled\tvia=site-1\t$/m);
    const both = await runScript(
      'gateway/devices-cli.ts',
      ['add', 'x', '--tenant', 'acme', '--gateway', '--children', 'a'],
      env,
    );
    expect(both.code).toBe(64);
    expect(both.stderr).toContain('--gateway and --children exclude each other');
  });
});
