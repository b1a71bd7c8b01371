import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  commandsFilter,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { DeviceRegistry } from '../../gateway/registry/device-registry.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { closedByBroker, connectDevice, connectOutcome } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream, waitForStream } from '../kit/streams.js';

// CONNACK return codes, MQTT 3.1.1 table 3.1
const IDENTIFIER_REJECTED = 2;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let registry: DeviceRegistry;
let a: ProvisionedDevice;
let b: ProvisionedDevice;
let off: ProvisionedDevice;
const clients: MqttClient[] = [];

const metricValue = async (name: string, labels: Record<string, string>) =>
  (await gateway.metrics.registry.getSingleMetric(name)!.get()).values.find((v) =>
    Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  )?.value ?? 0;

async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function keep(client: Promise<MqttClient>): Promise<MqttClient> {
  const c = await client;
  clients.push(c);
  return c;
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  registry = await DeviceRegistry.open(nc);
  a = await provision(nc, 'dev-a', 'acme');
  b = await provision(nc, 'dev-b', 'acme');
  off = await provision(nc, 'dev-off', 'acme');
  await registry.setDisabled(off.id, true);
  ({ gateway } = await startGateway(nats.url));
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('CONNECT', () => {
  const port = () => gateway.ports.mqtt;

  it('accepts the right secret', async () => {
    expect(await connectOutcome(port(), { clientId: a.id, username: a.id, password: a.secret })).toBe(
      'accepted',
    );
  });

  it('refuses a wrong secret, an unknown device, and no credentials alike', async () => {
    expect(await connectOutcome(port(), { clientId: a.id, username: a.id, password: 'wrong' })).toBe(
      BAD_USERNAME_OR_PASSWORD,
    );
    expect(await connectOutcome(port(), { clientId: 'ghost', username: 'ghost', password: 'x' })).toBe(
      BAD_USERNAME_OR_PASSWORD,
    );
    expect(await connectOutcome(port(), { clientId: a.id })).toBe(BAD_USERNAME_OR_PASSWORD);
    expect(
      await metricValue('gateway_mqtt_connects_total', { result: 'bad_credentials' }),
    ).toBeGreaterThanOrEqual(3);
  });

  it('reveals nothing about a known device to a wrong secret: not its client id rule, not that it is disabled', async () => {
    expect(
      await connectOutcome(gateway.ports.mqtt, { clientId: 'x-y', username: a.id, password: 'wrong' }),
    ).toBe(BAD_USERNAME_OR_PASSWORD);
    expect(
      await connectOutcome(gateway.ports.mqtt, { clientId: off.id, username: off.id, password: 'wrong' }),
    ).toBe(BAD_USERNAME_OR_PASSWORD);
  });

  it('refuses a disabled device', async () => {
    expect(await connectOutcome(port(), { clientId: off.id, username: off.id, password: off.secret })).toBe(
      NOT_AUTHORIZED,
    );
  });

  it('ties the client id to the device: its own id or id:suffix, never another device’s', async () => {
    expect(
      await connectOutcome(port(), { clientId: `${a.id}:sensor-2`, username: a.id, password: a.secret }),
    ).toBe('accepted');
    expect(
      await connectOutcome(port(), { clientId: 'mqttjs_random', username: a.id, password: a.secret }),
    ).toBe(IDENTIFIER_REJECTED);
  });

  it('makes session takeover across devices impossible', async () => {
    const victim = await keep(connectDevice(port(), a));
    // b, with its own valid credentials, tries to connect as a's client id to kick a off.
    expect(await connectOutcome(port(), { clientId: a.id, username: b.id, password: b.secret })).toBe(
      IDENTIFIER_REJECTED,
    );
    expect(victim.connected).toBe(true);
    await victim.publishAsync(telemetryTopic(a.id), '{"metrics":{"still":1}}', { qos: 1 });
  });
});

describe('ACL: a device stays inside its own topics', () => {
  it('closes a connection that publishes to another device’s topic; nothing reaches NATS', async () => {
    const client = await keep(connectDevice(gateway.ports.mqtt, a, { clientId: `${a.id}:acl-pub` }));
    const closed = closedByBroker(client);
    client.publish(telemetryTopic(b.id), JSON.stringify({ seq: 1, metrics: { spoofed: 1 } }), { qos: 1 });
    await closed;
    const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
    expect(events.filter((e) => e.data.metrics.spoofed !== undefined)).toEqual([]);
    expect(await metricValue('gateway_acl_denied_total', { action: 'publish' })).toBeGreaterThanOrEqual(1);
  });

  it.each(['$SYS/x', 'devices/dev-a/commands/reboot', 'elsewhere/telemetry'])(
    'refuses publishing on %s',
    async (topic) => {
      const client = await keep(
        connectDevice(gateway.ports.mqtt, a, { clientId: `${a.id}:acl-${topic.length}` }),
      );
      const closed = closedByBroker(client);
      client.publish(topic, '{"metrics":{"a":1}}', { qos: 1 });
      await closed;
    },
  );

  it('grants its own commands and refuses another device’s commands and wildcards (SUBACK 0x80)', async () => {
    const client = await keep(connectDevice(gateway.ports.mqtt, a, { clientId: `${a.id}:acl-sub` }));
    const filters = [
      commandsFilter(a.id),
      commandsFilter(b.id),
      '#',
      'devices/+/commands/#',
      'devices/dev-b/telemetry',
    ];
    // mqtt.js rejects a SUBACK holding any 0x80; the packet it carries has every return code.
    const suback = await client.subscribeAsync(filters).then(
      () => undefined,
      (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
    );
    expect(suback).toEqual([0, 128, 128, 128, 128]);
    expect(client.connected).toBe(true);
  });
});

describe('registry changes reach running gateways', () => {
  it('disconnects a device when it is disabled, refuses it until enabled again', async () => {
    const d = await provision(nc, 'dev-flip', 'acme');
    await eventually(
      async () =>
        (await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret })) ===
        'accepted',
      'new device to be accepted',
    );
    const client = await keep(connectDevice(gateway.ports.mqtt, d));
    const closed = closedByBroker(client);
    await registry.setDisabled(d.id, true);
    await closed;
    expect(
      await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret }),
    ).toBe(NOT_AUTHORIZED);
    await registry.setDisabled(d.id, false);
    await eventually(
      async () =>
        (await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret })) ===
        'accepted',
      'enabled device to be accepted',
    );
  });

  it('after a rotation, the old secret is refused and the new one works', async () => {
    const d = await provision(nc, 'dev-rot', 'acme');
    await eventually(
      async () =>
        (await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret })) ===
        'accepted',
      'new device',
    );
    const { secret } = await registry.rotate(d.id);
    await eventually(
      async () =>
        (await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: secret })) ===
        'accepted',
      'new secret',
    );
    expect(
      await connectOutcome(gateway.ports.mqtt, { clientId: d.id, username: d.id, password: d.secret }),
    ).toBe(BAD_USERNAME_OR_PASSWORD);
  });

  it('never writes a secret to the registry or the CLI view in the clear', async () => {
    const record = await registry.get(a.id);
    expect(JSON.stringify(record)).not.toContain(a.secret);
  });
});

describe('AUTH_MODE=open', () => {
  it('accepts anyone, takes the device from the topic, tenant default, and still keeps a client to one device', async () => {
    const { gateway: open } = await startGateway(nats.url, { AUTH_MODE: 'open' });
    try {
      const client = await keep(
        connectDevice(
          open.ports.mqtt,
          { id: 'anything', secret: '' },
          { clientId: 'demo-client', username: undefined, password: undefined },
        ),
      );
      await client.publishAsync(
        telemetryTopic('demo-7'),
        JSON.stringify({ seq: 1, metrics: { temperature: 20 } }),
        { qos: 1 },
      );
      const [event] = await waitForStream<CanonicalEvent>(nc, TELEMETRY_STREAM, (m) =>
        m.some((e) => e.data.deviceId === 'demo-7'),
      ).then((m) => m.filter((e) => e.data.deviceId === 'demo-7'));
      expect(event!.data.tenant).toBe('default');
      const closed = closedByBroker(client);
      client.publish(telemetryTopic('demo-8'), '{"metrics":{"a":1}}', { qos: 1 });
      await closed;
    } finally {
      await open.close();
    }
  });
});
