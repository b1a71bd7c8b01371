import type { Client, PublishPacket } from 'aedes';
import { describe, expect, it } from 'vitest';
import { authorizePublish, type PublishDeps } from '../../../gateway/broker/authorize-publish.js';
import { Connections } from '../../../gateway/broker/connections.js';
import { PublishBudgets } from '../../../gateway/broker/publish-budget.js';
import { AclDeniedError, NotStoredError } from '../../../gateway/errors.js';
import {
  deviceIdentity,
  type HandledCallback,
  type IncomingPublish,
} from '../../../gateway/ingest/telemetry-handler.js';
import { count, fakeClient, limitCount, log, metrics, presenceRecorder } from './fixtures.js';

function setup(o: { maxInFlight?: number; openMode?: boolean } = {}) {
  const m = metrics();
  const presence = presenceRecorder();
  const connections = new Connections({
    maxPerDevice: 8,
    openMode: o.openMode ?? false,
    presence,
    metrics: m,
    log,
  });
  const handled: {
    kind: 'telemetry' | 'rejected';
    msg: IncomingPublish;
    wanted: () => boolean;
    done: HandledCallback;
  }[] = [];
  const deps: PublishDeps = {
    connections,
    budgets: new PublishBudgets({
      msgsPerSec: 0,
      msgsBurst: 0,
      bytesPerSec: 0,
      bytesBurst: 0,
      metrics: m,
      log,
    }),
    telemetry: {
      handle: (_identity, msg, wanted, done) => handled.push({ kind: 'telemetry', msg, wanted, done }),
      rejectMessage: (_identity, msg, _rejection, wanted, done) =>
        handled.push({ kind: 'rejected', msg, wanted, done }),
    },
    presence,
    maxInFlight: o.maxInFlight ?? 100,
    metrics: m,
    log,
  };
  const client = fakeClient('dev-1');
  const answers: (Error | null | undefined)[] = [];
  const publish = (topic: string, qos: 0 | 1 = 1, from: unknown = client) => {
    const packet = {
      cmd: 'publish',
      topic,
      payload: Buffer.from('{"v":1}'),
      qos,
      retain: true,
      dup: false,
      messageId: 7,
    } as PublishPacket;
    authorizePublish(deps, from as Client, packet, (err) => answers.push(err));
    return packet;
  };
  return { m, presence, connections, handled, client, answers, publish };
}

describe('authorizePublish', () => {
  it("hands a device's telemetry to the ingest and answers when it is stored", async () => {
    const { connections, client, handled, answers, publish, m } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    const packet = publish('devices/dev-1/telemetry');
    expect(packet.retain).toBe(false); // never kept in aedes' retained store
    expect(handled).toHaveLength(1);
    expect(handled[0]!.msg).toMatchObject({
      topic: 'devices/dev-1/telemetry',
      qos: 1,
      packetId: 7,
      dup: false,
      clientId: 'dev-1',
    });
    expect(handled[0]!.wanted()).toBe(true);
    expect(answers).toEqual([]);
    handled[0]!.done();
    expect(answers).toEqual([null]);
    expect(await count(m, 'gateway_mqtt_publishes_total', { outcome: 'acked', qos: '1' })).toBe(1);
  });

  it('answers with the error when it could not be stored, counted', async () => {
    const { connections, client, handled, answers, publish, m } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish('devices/dev-1/telemetry');
    const err = new NotStoredError('timeout', 'telemetry.acme.dev-1');
    handled[0]!.done(err);
    expect(answers).toEqual([err]);
    expect(await count(m, 'gateway_mqtt_publishes_total', { outcome: 'not_stored', qos: '1' })).toBe(1);
  });

  it('does not retry a QoS 0 publish', () => {
    const { connections, client, handled, publish } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish('devices/dev-1/telemetry', 0);
    expect(handled[0]!.wanted()).toBe(false);
  });

  it('publishes a status as a presence event', () => {
    const { connections, client, presence, answers, publish } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish('devices/dev-1/status');
    expect(presence.events).toEqual([
      expect.objectContaining({
        type: 'status',
        deviceId: 'dev-1',
        tenant: 'acme',
        clientId: 'dev-1',
        status: '{"v":1}',
      }),
    ]);
    expect(answers).toEqual([null]);
  });

  it("dead-letters a topic under the device's root that the contract does not define", () => {
    const { connections, client, handled, publish } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish('devices/dev-1/other');
    expect(handled.map((h) => h.kind)).toEqual(['rejected']);
  });

  it.each([
    ['another device', 'devices/dev-2/telemetry'],
    ['its own commands', 'devices/dev-1/commands/reboot'],
    ['outside the contract', 'somewhere/else'],
  ])('denies a publish to %s', async (_what, topic) => {
    const { connections, client, handled, answers, publish, m } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish(topic);
    expect(handled).toEqual([]);
    expect(answers[0]).toBeInstanceOf(AclDeniedError);
    expect(await count(m, 'gateway_acl_denied_total', { action: 'publish' })).toBe(1);
  });

  it('binds an open-mode client by its first publish', () => {
    const { connections, client, handled, answers, publish } = setup({ openMode: true });
    connections.accepted(client, undefined);
    publish('devices/dev-9/telemetry');
    publish('devices/dev-1/telemetry');
    expect(handled).toHaveLength(1);
    expect(answers[0]).toBeInstanceOf(AclDeniedError);
  });

  it('passes a will left by a dead broker instance (no client)', () => {
    const { answers, publish } = setup();
    publish('devices/dev-1/status', 1, null);
    expect(answers).toEqual([null]);
  });

  it('pauses reading at MAX_IN_FLIGHT_PER_CLIENT', async () => {
    const { connections, client, handled, publish, m } = setup({ maxInFlight: 2 });
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    publish('devices/dev-1/telemetry');
    publish('devices/dev-1/telemetry');
    expect(client.paused).toBe(1);
    expect(await limitCount(m, 'MAX_IN_FLIGHT_PER_CLIENT')).toBe(1);
    handled[0]!.done();
    expect(client.resumed).toBe(1);
  });
});
