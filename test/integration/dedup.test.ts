import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  DEADLETTER_STREAM,
  type DeadLetter,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { mosquittoPub, pahoPublishEach } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { RawSession } from '../kit/raw-mqtt.js';
import { readStream, waitForStream } from '../kit/streams.js';

/**
 * What the gateway takes for a repeat. Clients that open a connection per publish start at packet id
 * 1 every time (mosquitto_pub always; paho with a new client object, as battery devices do): such
 * publishes are new, and must all be stored, however alike. Only a retransmission — the DUP flag, the
 * same packet id and content, on the same connection or after a reconnect — is one.
 */

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
const devices: Record<string, ProvisionedDevice> = {};

const metric = async (name: string, labels: Record<string, string>) =>
  (await gateway.metrics.registry.getSingleMetric(name)!.get()).values.find((v) =>
    Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  )?.value ?? 0;

const eventsOf = async (id: string) =>
  (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter((e) => e.data.deviceId === id);
const lettersOf = async (id: string) =>
  (await readStream<DeadLetter>(nc, DEADLETTER_STREAM)).filter((e) => e.data.deviceId === id);

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  for (const name of ['mosq', 'paho', 'raw', 'reconnect', 'changed', 'bad', 'stamped']) {
    devices[name] = await provision(nc, `${name}-1`, 'acme');
  }
  ({ gateway } = await startGateway(nats.url));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('new publishes are never taken for duplicates', () => {
  it('stores each of three mosquitto_pub runs of the quick-start reading', async () => {
    const duplicatesBefore = await metric('gateway_events_total', { outcome: 'duplicate' });
    // The README's own quick start, three times: three connections, each sending packet id 1.
    for (let i = 0; i < 3; i++) {
      await mosquittoPub(
        gateway.ports.mqtt,
        devices.mosq!,
        telemetryTopic('mosq-1'),
        '{"metrics":{"temperature":21.5}}',
      );
    }
    const events = await eventsOf('mosq-1');
    expect(events).toHaveLength(3);
    expect(new Set(events.map((e) => e.data.id)).size).toBe(3);
    expect(new Set(events.map((e) => e.msgId)).size).toBe(3);
    expect(await metric('gateway_events_total', { outcome: 'duplicate' })).toBe(duplicatesBefore);
  });

  it('stores each publish of a paho client made anew for every message', async () => {
    const payload = JSON.stringify({ metrics: { battery: 3.7 } });
    const acks = await pahoPublishEach(gateway.ports.mqtt, devices.paho!, telemetryTopic('paho-1'), [
      payload,
      payload,
      payload,
    ]);
    expect(acks).toEqual([
      { mid: 1, published: true },
      { mid: 1, published: true },
      { mid: 1, published: true },
    ]);
    expect(await eventsOf('paho-1')).toHaveLength(3);
  });

  it('keeps one dead letter per bad publish, however alike their payloads and packet ids', async () => {
    // Six different topics outside the contract, the same payload, each from a new connection.
    for (let i = 0; i < 6; i++) {
      await mosquittoPub(
        gateway.ports.mqtt,
        devices.bad!,
        `devices/bad-1/nowhere-${i}`,
        '{"metrics":{"a":1}}',
      );
    }
    const letters = await lettersOf('bad-1');
    expect(letters.map((l) => l.data.topic).sort()).toEqual(
      Array.from({ length: 6 }, (_, i) => `devices/bad-1/nowhere-${i}`),
    );
    expect(letters.every((l) => l.data.reason === 'TOPIC_UNKNOWN')).toBe(true);
  });

  it('stores a DUP retransmission that carries other content than the original as a new reading', async () => {
    const session = await RawSession.open(gateway.ports.mqtt, {
      clientId: 'changed-1',
      username: 'changed-1',
      password: devices.changed!.secret,
    });
    await session.publish(telemetryTopic('changed-1'), '{"metrics":{"a":1}}', 9);
    await session.publish(telemetryTopic('changed-1'), '{"metrics":{"a":2}}', 9, true);
    await session.drop();
    expect((await eventsOf('changed-1')).map((e) => e.data.metrics.a!.value)).toEqual([1, 2]);
  });
});

describe('retransmissions are stored once', () => {
  it('a DUP publish with the same packet id and content on the same connection', async () => {
    const session = await RawSession.open(gateway.ports.mqtt, {
      clientId: 'raw-1',
      username: 'raw-1',
      password: devices.raw!.secret,
    });
    const reading = '{"metrics":{"temperature":20}}';
    await session.publish(telemetryTopic('raw-1'), reading, 7);
    await session.publish(telemetryTopic('raw-1'), reading, 7, true);
    await session.publish(telemetryTopic('raw-1'), reading, 7, true);
    // The packet id used again without DUP: a new publish.
    await session.publish(telemetryTopic('raw-1'), reading, 7);
    await session.drop();
    const events = await eventsOf('raw-1');
    expect(events).toHaveLength(2);
  });

  it('a DUP publish sent again after a reconnect, its PUBACK never seen', async () => {
    const login = { clientId: 'reconnect-1', username: 'reconnect-1', password: devices.reconnect!.secret };
    const first = await RawSession.open(gateway.ports.mqtt, login);
    const reading = '[{"metrics":{"a":1}},{"metrics":{"a":2}},{"metrics":{"a":"x"}}]';
    // Sent, and the connection lost before the PUBACK could arrive; the gateway stores it anyway.
    first.send(telemetryTopic('reconnect-1'), reading, 1);
    await waitForStream<CanonicalEvent>(
      nc,
      TELEMETRY_STREAM,
      (m) => m.filter((e) => e.data.deviceId === 'reconnect-1').length === 2,
    );
    await first.drop();
    const second = await RawSession.open(gateway.ports.mqtt, login);
    await second.publish(telemetryTopic('reconnect-1'), reading, 1, true);
    await second.drop();
    expect(await eventsOf('reconnect-1')).toHaveLength(2);
    // The rejected third reading's dead letter is not repeated either.
    expect(await lettersOf('reconnect-1')).toHaveLength(1);
    expect(await metric('gateway_mqtt_retransmissions_total', { matched: 'publish' })).toBeGreaterThanOrEqual(
      1,
    );
  });

  it('readings with ts keep their content ids: sent again without DUP they are still stored once', async () => {
    const ts = Date.now() - 1000;
    const payload = JSON.stringify({ ts, metrics: { temperature: 19 } });
    for (let i = 0; i < 2; i++) {
      await mosquittoPub(gateway.ports.mqtt, devices.stamped!, telemetryTopic('stamped-1'), payload);
    }
    const events = await eventsOf('stamped-1');
    expect(events).toHaveLength(1);
    expect(events[0]!.msgId).toMatch(/^acme\.stamped-1\.h\./);
  });
});
