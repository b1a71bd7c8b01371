import type { Client, PublishPacket, Subscription } from 'aedes';
import { describe, expect, it } from 'vitest';
import { authorizePublish, type PublishDeps } from '../../../gateway/broker/authorize-publish.js';
import { authorizeSubscribe } from '../../../gateway/broker/authorize-subscribe.js';
import { Connections } from '../../../gateway/broker/connections.js';
import type { ChildVerdict } from '../../../gateway/broker/gateway-children.js';
import { PublishBudgets } from '../../../gateway/broker/publish-budget.js';
import type { Rejection } from '../../../gateway/errors.js';
import { AclDeniedError } from '../../../gateway/errors.js';
import {
  type DeviceIdentity,
  deviceIdentity,
  type HandledCallback,
  type IncomingPublish,
} from '../../../gateway/ingest/telemetry-handler.js';
import { count, fakeClient, log, metrics, presenceRecorder } from './fixtures.js';

/**
 * What a gateway device's connection may publish and subscribe to (README, Gateway devices): its
 * children's topics as theirs, its bridge's $SYS notification as its status, and a refused child
 * dead-lettered without closing the connection.
 */

const SITE = deviceIdentity('site-1', 'acme', {}, { children: 'any' });
const CHILD = deviceIdentity('meter-a', 'acme', { via: 'site-1' });

function setup(verdicts: Record<string, ChildVerdict | Promise<ChildVerdict>> = {}, msgsPerSec = 0) {
  const m = metrics();
  const presence = presenceRecorder();
  const connections = new Connections({ maxPerDevice: 8, openMode: false, presence, metrics: m, log });
  const handled: {
    identity: DeviceIdentity;
    msg: IncomingPublish;
    rejection?: Rejection;
    done: HandledCallback;
  }[] = [];
  const deps: PublishDeps = {
    connections,
    budgets: new PublishBudgets({
      msgsPerSec,
      msgsBurst: msgsPerSec,
      bytesPerSec: 0,
      bytesBurst: 0,
      metrics: m,
      log,
    }),
    telemetry: {
      handle: (identity, msg, _wanted, done) => handled.push({ identity, msg, done }),
      rejectMessage: (identity, msg, rejection, _wanted, done) =>
        handled.push({ identity, msg, rejection, done }),
    },
    presence,
    children: {
      resolve: (_gateway, childId) => verdicts[childId] ?? { ok: false, reason: 'CHILD_DENIED' },
    },
    maxInFlight: 100,
    metrics: m,
    log,
  };
  const client = fakeClient('site-1');
  connections.accepted(client, SITE);
  connections.ready(client);
  const answers: (Error | null | undefined)[] = [];
  const publish = (topic: string, payload = '{"metrics":{"t":1}}', from: object = client) =>
    authorizePublish(
      deps,
      from as Client,
      {
        cmd: 'publish',
        topic,
        payload: Buffer.from(payload),
        qos: 1,
        retain: true,
        dup: false,
        messageId: 3,
      } as PublishPacket,
      (err) => answers.push(err),
    );
  const subscribed: (string | null)[] = [];
  const subscribe = (topic: string, from: object = client) =>
    authorizeSubscribe(
      {
        connections,
        children: { speaksFor: (gw, child) => gw === 'site-1' && child === 'meter-a' },
        maxSubscriptions: 10,
        metrics: m,
        log,
      },
      from as Client,
      { topic, qos: 1 } as Subscription,
      (_err, sub) => subscribed.push(sub?.topic ?? null),
    );
  return { m, presence, connections, client, handled, answers, publish, subscribed, subscribe };
}

describe('a gateway device publishing', () => {
  it("stores a child's telemetry as the child's, and the child is online through the connection", () => {
    const { handled, presence, publish, connections, client, answers } = setup({
      'meter-a': { ok: true, identity: CHILD },
    });
    publish('devices/meter-a/telemetry');
    publish('devices/meter-a/telemetry');
    expect(handled.map((h) => [h.identity.deviceId, h.msg.clientId, h.rejection])).toEqual([
      ['meter-a', 'site-1', undefined],
      ['meter-a', 'site-1', undefined],
    ]);
    for (const h of handled) h.done();
    expect(answers).toEqual([null, null]);
    // `connected` once, under the gateway device's client id.
    expect(presence.events.filter((e) => e.deviceId === 'meter-a')).toEqual([
      { tenant: 'acme', deviceId: 'meter-a', clientId: 'site-1', type: 'connected' },
    ]);
    expect(connections.isOnline('meter-a')).toBe(true);
    client.closed = true;
    connections.disconnected(client);
    expect(connections.isOnline('meter-a')).toBe(false);
    expect(presence.events.filter((e) => e.type === 'lost').map((e) => e.deviceId)).toEqual([
      'site-1',
      'meter-a',
    ]);
  });

  it("spends each child's own publish budget, not the gateway device's", async () => {
    const CHILD_B = deviceIdentity('meter-b', 'acme', { via: 'site-1' });
    const { handled, publish, m } = setup(
      { 'meter-a': { ok: true, identity: CHILD }, 'meter-b': { ok: true, identity: CHILD_B } },
      1,
    );
    publish('devices/meter-a/telemetry');
    publish('devices/meter-a/telemetry'); // over meter-a's 1 a second: waits
    publish('devices/meter-b/telemetry');
    publish('devices/site-1/telemetry');
    expect(handled.map((h) => h.identity.deviceId)).toEqual(['meter-a', 'meter-b', 'site-1']);
    expect(await count(m, 'gateway_publish_throttled_total', { action: 'delayed' })).toBe(1);
  });

  it('waits for a child being registered, then stores its reading as its own', async () => {
    const { handled, publish } = setup({ 'meter-a': Promise.resolve({ ok: true, identity: CHILD }) });
    publish('devices/meter-a/telemetry');
    expect(handled).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(handled.map((h) => h.identity.deviceId)).toEqual(['meter-a']);
  });

  it('answers a failed registration with no PUBACK (the bridge sends it again)', async () => {
    const { handled, publish, answers } = setup({
      'meter-a': Promise.reject(new Error('registry unavailable')),
    });
    publish('devices/meter-a/telemetry');
    await new Promise((r) => setImmediate(r));
    expect(handled).toEqual([]);
    expect(answers[0]).toMatchObject({ code: 'NOT_STORED' });
  });

  it('acknowledges and dead-letters a publish for a device it may not speak for, and stays connected', async () => {
    const { handled, publish, client, answers, m } = setup({
      'meter-x': { ok: false, reason: 'CHILD_LIMIT' },
    });
    publish('devices/direct-1/telemetry');
    publish('devices/meter-x/telemetry');
    expect(handled.map((h) => [h.identity.deviceId, h.rejection?.reason])).toEqual([
      ['site-1', 'CHILD_DENIED'],
      ['site-1', 'CHILD_LIMIT'],
    ]);
    for (const h of handled) h.done();
    expect(answers).toEqual([null, null]);
    expect(client.closes).toBe(0);
    expect(await count(m, 'gateway_acl_denied_total', { action: 'publish' })).toBe(2);
  });

  it("takes its bridge's $SYS notification as its own status", () => {
    const { presence, publish, answers, handled } = setup();
    publish('$SYS/broker/connection/site-1/state', '1');
    expect(handled).toEqual([]);
    expect(answers).toEqual([null]);
    expect(presence.events.at(-1)).toMatchObject({ type: 'status', deviceId: 'site-1', status: '1' });
  });

  it.each([
    ['a command topic', 'devices/meter-a/commands/reboot'],
    ['another $SYS topic', '$SYS/broker/uptime'],
    ['a topic outside the contract', 'sites/site-1/telemetry'],
  ])('is still closed for %s', (_what, topic) => {
    const { publish, answers, handled } = setup({ 'meter-a': { ok: true, identity: CHILD } });
    publish(topic);
    expect(handled).toEqual([]);
    expect(answers[0]).toBeInstanceOf(AclDeniedError);
  });

  it('is the only kind of device whose $SYS notification, or whose publish for another, is accepted', () => {
    const { connections, publish, answers, handled } = setup({ 'meter-a': { ok: true, identity: CHILD } });
    const plain = fakeClient('dev-1');
    connections.accepted(plain, deviceIdentity('dev-1', 'acme', {}));
    publish('$SYS/broker/connection/dev-1/state', '1', plain);
    publish('devices/meter-a/telemetry', '{"metrics":{"t":1}}', plain);
    expect(handled).toEqual([]);
    expect(answers.map((a) => a instanceof AclDeniedError)).toEqual([true, true]);
  });
});

describe('a gateway device subscribing', () => {
  it("may hold devices/+/commands/# and its children's command topics, nothing else", () => {
    const { subscribe, subscribed } = setup();
    subscribe('devices/+/commands/#');
    subscribe('devices/meter-a/commands/#');
    subscribe('devices/site-1/commands/#');
    subscribe('devices/direct-1/commands/#');
    subscribe('devices/+/telemetry');
    subscribe('#');
    expect(subscribed).toEqual([
      'devices/+/commands/#',
      'devices/meter-a/commands/#',
      'devices/site-1/commands/#',
      null,
      null,
      null,
    ]);
  });

  it('refuses devices/+/commands/# to a device that is not a gateway device', () => {
    const { connections, subscribe, subscribed } = setup();
    const plain = fakeClient('dev-1');
    connections.accepted(plain, deviceIdentity('dev-1', 'acme', {}));
    subscribe('devices/+/commands/#', plain);
    subscribe('devices/meter-a/commands/#', plain);
    expect(subscribed).toEqual([null, null]);
  });
});
