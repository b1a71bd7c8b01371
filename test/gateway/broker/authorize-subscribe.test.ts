import type { Client, Subscription } from 'aedes';
import { describe, expect, it } from 'vitest';
import { authorizeSubscribe, unsubscribed } from '../../../gateway/broker/authorize-subscribe.js';
import { Connections } from '../../../gateway/broker/connections.js';
import { SubscriptionLimitError } from '../../../gateway/errors.js';
import { deviceIdentity } from '../../../gateway/ingest/telemetry-handler.js';
import { count, fakeClient, limitCount, log, metrics, presenceRecorder } from './fixtures.js';

function setup(maxSubscriptions = 3, openMode = false) {
  const m = metrics();
  const connections = new Connections({
    maxPerDevice: 8,
    openMode,
    presence: presenceRecorder(),
    metrics: m,
    log,
  });
  const client = fakeClient('dev-1');
  const answers: { err: Error | null; sub: Subscription | null | undefined }[] = [];
  const subscribe = (topic: string) =>
    authorizeSubscribe(
      { connections, maxSubscriptions, metrics: m, log },
      client as unknown as Client,
      { topic, qos: 1 },
      (err, sub) => answers.push({ err, sub }),
    );
  return { m, connections, client, answers, subscribe };
}

describe('authorizeSubscribe', () => {
  it("grants the device's own commands, and refuses anything else with SUBACK 0x80", async () => {
    const { connections, client, answers, subscribe, m } = setup();
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    subscribe('devices/dev-1/commands/#');
    subscribe('devices/dev-2/commands/#');
    subscribe('#');
    expect(answers.map((a) => [a.err, a.sub?.topic ?? null])).toEqual([
      [null, 'devices/dev-1/commands/#'],
      [null, null],
      [null, null],
    ]);
    expect(await count(m, 'gateway_acl_denied_total', { action: 'subscribe' })).toBe(2);
    expect(client.closes).toBe(0);
  });

  it('closes the connection at the cap, refused filters counted, a filter held again not', async () => {
    const { connections, client, answers, subscribe, m } = setup(3);
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    subscribe('devices/dev-1/commands/a');
    subscribe('devices/dev-1/commands/a');
    subscribe('devices/dev-2/commands/#');
    subscribe('devices/dev-1/commands/b');
    expect(answers.map((a) => a.err)).toEqual([null, null, null, null]);
    subscribe('devices/dev-1/commands/c');
    expect(answers[4]!.err).toBeInstanceOf(SubscriptionLimitError);
    expect(connections.state(client)?.lostReason).toBe('subscription limit');
    expect(await limitCount(m, 'MAX_SUBSCRIPTIONS_PER_CLIENT')).toBe(1);
    expect(await count(m, 'gateway_subscription_limit_total')).toBe(1);
  });

  it('frees room as filters are unsubscribed', () => {
    const { connections, client, answers, subscribe } = setup(1);
    connections.accepted(client, deviceIdentity('dev-1', 'acme', {}));
    subscribe('devices/dev-1/commands/a');
    unsubscribed(connections, client as unknown as Client, ['devices/dev-1/commands/a']);
    subscribe('devices/dev-1/commands/b');
    expect(answers.map((a) => a.sub?.topic)).toEqual([
      'devices/dev-1/commands/a',
      'devices/dev-1/commands/b',
    ]);
  });

  it('binds an open-mode client by its first commands filter', () => {
    const { connections, client, answers, subscribe } = setup(3, true);
    connections.accepted(client, undefined);
    subscribe('devices/dev-5/commands/#');
    subscribe('devices/dev-6/commands/#');
    expect(answers.map((a) => a.sub?.topic ?? null)).toEqual(['devices/dev-5/commands/#', null]);
  });

  it('refuses a client that never authenticated', () => {
    const { answers, subscribe } = setup();
    subscribe('devices/dev-1/commands/#');
    expect(answers).toEqual([{ err: null, sub: null }]);
  });
});
