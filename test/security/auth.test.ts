import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import {
  type CanonicalEvent,
  commandsFilter,
  commandsSubject,
  commandsTopic,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { createGateway, type Gateway } from '../../gateway/gateway.js';
import { DeviceRegistry } from '../../gateway/registry/device-registry.js';
import { natsClient, type ProvisionedDevice, provision } from '../kit/gateway.js';
import { closedByBroker, connectDevice, connectOutcome } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

/**
 * Hostile devices against the authentication and ACL of a real gateway, with every line it logs
 * (at trace level) captured, so that the last test can prove no secret ever reached the log.
 */

// CONNACK return codes, MQTT 3.1.1 table 3.1
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;
const SUBACK_FAILURE = 0x80;

let nats: NatsServer;
let nc: NatsConnection;
let registry: DeviceRegistry;
let a: ProvisionedDevice;
let b: ProvisionedDevice;
let off: ProvisionedDevice;
let gateway: Gateway;
const gateways: Gateway[] = [];
const clients: MqttClient[] = [];
/** Everything any gateway of this file logged. */
let logged = '';
/** Every password a test sent, right or wrong: none may appear in `logged`. */
const passwordsSent = new Set<string>();

async function startLoggedGateway(overrides: Record<string, string> = {}): Promise<Gateway> {
  const config = loadConfig(GatewayConfigSchema, {
    NATS_URL: nats.url,
    MQTT_PORT: '0',
    MQTT_WS_PORT: '0',
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: 'trace',
    SHUTDOWN_GRACE_MS: '2000',
    ...overrides,
  });
  const sink = {
    write(line: string) {
      logged += line;
    },
  };
  const gw = await createGateway(config, createLogger('gateway', config.LOG_LEVEL, sink));
  gateways.push(gw);
  return gw;
}

const wrong = () => {
  const password = `wrong-${randomUUID()}`;
  passwordsSent.add(password);
  return password;
};

const metricValue = async (gw: Gateway, name: string, labels: Record<string, string> = {}) =>
  (await gw.metrics.registry.getSingleMetric(name)!.get()).values.find((v) =>
    Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  )?.value ?? 0;

async function keep(client: Promise<MqttClient>): Promise<MqttClient> {
  const c = await client;
  clients.push(c);
  return c;
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  registry = await DeviceRegistry.open(nc);
  a = await provision(nc, 'sec-a', 'acme');
  b = await provision(nc, 'sec-b', 'acme');
  off = await provision(nc, 'sec-off', 'acme');
  for (const d of [a, b, off]) passwordsSent.add(d.secret);
  await registry.setDisabled(off.id, true);
  gateway = await startLoggedGateway();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await Promise.all(gateways.map((g) => g.close()));
  await nc?.close();
  await nats?.dispose();
});

describe('CONNECT', () => {
  const port = () => gateway.ports.mqtt;

  it('refuses a wrong secret and an unknown device alike (4)', async () => {
    expect(await connectOutcome(port(), { clientId: a.id, username: a.id, password: wrong() })).toBe(
      BAD_USERNAME_OR_PASSWORD,
    );
    expect(
      await connectOutcome(port(), { clientId: 'sec-ghost', username: 'sec-ghost', password: wrong() }),
    ).toBe(BAD_USERNAME_OR_PASSWORD);
  });

  it('refuses a disabled device (5 with its right secret, 4 with a wrong one)', async () => {
    expect(await connectOutcome(port(), { clientId: off.id, username: off.id, password: off.secret })).toBe(
      NOT_AUTHORIZED,
    );
    expect(await connectOutcome(port(), { clientId: off.id, username: off.id, password: wrong() })).toBe(
      BAD_USERNAME_OR_PASSWORD,
    );
  });

  it('makes session takeover across devices impossible', async () => {
    const victim = await keep(connectDevice(port(), a));
    const kicked = new Promise<boolean>((resolve) => {
      victim.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 1_500);
    });
    // b, with its own valid credentials, takes a's client id (or a's prefix) to kick a off …
    for (const clientId of [a.id, `${a.id}:x`]) {
      expect(await connectOutcome(port(), { clientId, username: b.id, password: b.secret })).toBe(
        IDENTIFIER_REJECTED,
      );
    }
    // … or tries a's client id with a guessed secret, and then without credentials.
    expect(await connectOutcome(port(), { clientId: a.id, username: a.id, password: wrong() })).toBe(
      BAD_USERNAME_OR_PASSWORD,
    );
    expect(await connectOutcome(port(), { clientId: a.id })).toBe(BAD_USERNAME_OR_PASSWORD);
    expect(await kicked).toBe(false);
    expect(victim.connected).toBe(true);
    await victim.publishAsync(telemetryTopic(a.id), JSON.stringify({ metrics: { still: 1 } }), { qos: 1 });
  });
});

describe('ACL', () => {
  it('closes a connection that publishes on another device’s topic; nothing reaches NATS', async () => {
    const client = await keep(connectDevice(gateway.ports.mqtt, a, { clientId: `${a.id}:spoof` }));
    const closed = closedByBroker(client);
    const marker = randomUUID();
    client.publish(telemetryTopic(b.id), JSON.stringify({ metrics: { spoofed: 1 }, tag: marker }), {
      qos: 1,
    });
    await closed;
    const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
    expect(events.filter((e) => e.data.deviceId === b.id)).toEqual([]);
  });

  it('refuses subscriptions to another device’s commands and to # (SUBACK 0x80), and delivers nothing', async () => {
    const spy = await keep(connectDevice(gateway.ports.mqtt, a, { clientId: `${a.id}:spy` }));
    const received: string[] = [];
    spy.on('message', (topic) => received.push(topic));
    const granted = await spy
      .subscribeAsync([commandsFilter(b.id), '#', '+/+/+', 'devices/+/commands/#', '$SYS/#'])
      .then(
        (subs) => subs.map((s) => s.qos),
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
      );
    expect(granted).toEqual(Array(5).fill(SUBACK_FAILURE));
    expect(spy.connected).toBe(true);

    // b gets a command and publishes telemetry; a's spy must see neither.
    const victim = await keep(connectDevice(gateway.ports.mqtt, b));
    const commands: string[] = [];
    victim.on('message', (topic) => commands.push(topic));
    await victim.subscribeAsync(commandsFilter(b.id), { qos: 1 });
    await victim.publishAsync(telemetryTopic(b.id), JSON.stringify({ metrics: { t: 1 } }), { qos: 1 });
    const reply = await nc.request(commandsSubject('acme', b.id, ['reboot']), '{}', { timeout: 5_000 });
    expect(reply.json()).toMatchObject({ delivered: true });
    const deadline = Date.now() + 5_000;
    while (commands.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(commands).toEqual([commandsTopic(b.id, ['reboot'])]);
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual([]);
    expect(
      await metricValue(gateway, 'gateway_acl_denied_total', { action: 'subscribe' }),
    ).toBeGreaterThanOrEqual(5);
  });
});

describe('brute force', () => {
  it('refuses a source past AUTH_FAILURES_PER_MINUTE at once, without checking secrets, until it cools down', async () => {
    // 20 a minute: blocked after 20 failures, one more allowed every 3 s after that.
    const limited = await startLoggedGateway({ AUTH_FAILURES_PER_MINUTE: '20' });
    const port = limited.ports.mqtt;
    // Successes never count: a NAT'd fleet behind one address connects freely.
    for (let i = 0; i < 3; i++) {
      expect(
        await connectOutcome(port, { clientId: `${a.id}:ok${i}`, username: a.id, password: a.secret }),
      ).toBe('accepted');
    }
    // Guesses in rounds of 10 until the source is blocked: 20, plus what drained meanwhile.
    let guesses = 0;
    for (;;) {
      const round = await Promise.all(
        Array.from({ length: 10 }, () =>
          connectOutcome(port, { clientId: a.id, username: a.id, password: wrong() }),
        ),
      );
      guesses += round.filter((code) => code === BAD_USERNAME_OR_PASSWORD).length;
      expect(round.every((code) => code === BAD_USERNAME_OR_PASSWORD || code === SERVER_UNAVAILABLE)).toBe(
        true,
      );
      if (round.includes(SERVER_UNAVAILABLE)) break;
      expect(guesses).toBeLessThan(60);
    }
    expect(guesses).toBeGreaterThanOrEqual(20);
    const before = await metricValue(limited, 'gateway_mqtt_connects_total', { result: 'rate_limited' });

    const started = performance.now();
    const blocked = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        connectOutcome(port, {
          clientId: `${a.id}:blocked${i}`,
          username: a.id,
          password: i === 0 ? a.secret : wrong(),
        }),
      ),
    );
    const blockedMs = performance.now() - started;
    // Even the right secret is refused from a blocked source, as "server unavailable" (retry later).
    expect(blocked).toEqual(Array(20).fill(SERVER_UNAVAILABLE));
    expect(await metricValue(limited, 'gateway_mqtt_connects_total', { result: 'rate_limited' })).toBe(
      before + 20,
    );
    expect(await metricValue(limited, 'gateway_auth_blocked_sources')).toBe(1);
    console.log(
      `[brute force] blocked after ${guesses} checked guesses; 20 CONNECTs from a blocked source answered in ${blockedMs.toFixed(0)} ms`,
    );

    // Refusals while blocked do not add to the count: the source drains and its devices get in.
    const deadline = Date.now() + 15_000;
    let outcome: number | 'accepted' = SERVER_UNAVAILABLE;
    while (outcome !== 'accepted' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      outcome = await connectOutcome(port, { clientId: `${a.id}:after`, username: a.id, password: a.secret });
    }
    expect(outcome).toBe('accepted');
    expect(logged).toMatch(/too many failed authentications from this source/);
  });
});

describe('logs', () => {
  it('never contain a secret, a password tried, or a stored hash', async () => {
    const hashes = await Promise.all([a, b, off].map(async (d) => (await registry.get(d.id))!.secretHash));
    expect(logged.length).toBeGreaterThan(1_000);
    expect(logged).toMatch(/connection refused/);
    for (const password of passwordsSent) expect(logged).not.toContain(password);
    for (const hash of hashes) {
      expect(logged).not.toContain(hash);
      // The salt or key part alone would be as bad.
      for (const part of hash.split('$').slice(4)) expect(logged).not.toContain(part);
    }
  });
});
