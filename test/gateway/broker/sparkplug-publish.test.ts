import type { Client, PublishPacket, Subscription } from 'aedes';
import sparkplug from 'sparkplug-payload';
import type { UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { describe, expect, it } from 'vitest';
import { telemetrySubject } from '../../../contract/subjects.js';
import { authorizePublish, type PublishDeps } from '../../../gateway/broker/authorize-publish.js';
import { authorizeSubscribe } from '../../../gateway/broker/authorize-subscribe.js';
import { Connections } from '../../../gateway/broker/connections.js';
import type { ChildVerdict } from '../../../gateway/broker/gateway-children.js';
import { PublishBudgets } from '../../../gateway/broker/publish-budget.js';
import { forSparkplug } from '../../../gateway/broker/sparkplug-publish.js';
import { AclDeniedError } from '../../../gateway/errors.js';
import type { ParsedPayload } from '../../../gateway/ingest/parse-payload.js';
import {
  type DeviceIdentity,
  deviceIdentity,
  type IncomingPublish,
} from '../../../gateway/ingest/telemetry-handler.js';
import type { SparkplugCommand } from '../../../gateway/sparkplug/commands.js';
import { EdgeNodes } from '../../../gateway/sparkplug/edge-nodes.js';
import { count, fakeClient, log, metrics, presenceRecorder } from './fixtures.js';

/**
 * A gateway device publishing as a Sparkplug B edge node (README, Sparkplug B): only under its own
 * edge node id; node readings as its own, device readings as its children's (the same ACL as
 * `devices/{child}/…`), a gap answered with a rebirth request, births and deaths as presence.
 */

const codec = sparkplug.get('spBv1.0')!;
const encode = (p: UPayload) => Buffer.from(codec.encodePayload(p));
const EDGE = deviceIdentity('edge-1', 'acme', { site: 'north' }, { children: 'any' });
const PLAIN = deviceIdentity('plain-1', 'acme', {});
const child = (id: string) => deviceIdentity(id, 'acme', { via: 'edge-1' });

function setup(identity: DeviceIdentity = EDGE, pending: Record<string, Promise<ChildVerdict>> = {}) {
  const m = metrics();
  const presence = presenceRecorder();
  const connections = new Connections({ maxPerDevice: 8, openMode: false, presence, metrics: m, log });
  const verdicts: Record<string, ChildVerdict | Promise<ChildVerdict>> = {
    'pump-1': { ok: true, identity: child('pump-1') },
    'valve-1': { ok: true, identity: child('valve-1') },
    'direct-1': { ok: false, reason: 'CHILD_DENIED' },
    ...pending,
  };
  const stored: { identity: DeviceIdentity; msg: IncomingPublish; parsed: ParsedPayload }[] = [];
  const sent: SparkplugCommand[] = [];
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
    telemetry: { handle: () => {}, rejectMessage: () => {} },
    presence,
    children: { resolve: (_gateway, id) => verdicts[id] ?? { ok: false, reason: 'CHILD_DENIED' } },
    maxInFlight: 100,
    metrics: m,
    log,
  };
  const edgeNodes = new EdgeNodes(
    {
      maxPayloadBytes: 65_536,
      maxMetricsPerBirth: 64,
      maxMetricsPerNode: 256,
      maxDevicesPerNode: 8,
      rebirthIntervalMs: 1_000,
    },
    () => 0,
  );
  const sp = {
    edgeNodes,
    telemetry: {
      handleParsed: (
        identity: DeviceIdentity,
        msg: IncomingPublish,
        parsed: ParsedPayload,
        _wanted: () => boolean,
        done: () => void,
      ) => {
        stored.push({ identity, msg, parsed });
        done();
      },
      rejectMessage: () => {},
    },
    send: (c: SparkplugCommand) => sent.push(c),
    now: () => 0,
  };
  deps.sparkplug = (client, gateway, packet, done) => forSparkplug(deps, sp, client, gateway, packet, done);
  const client = fakeClient(identity.deviceId);
  connections.accepted(client, identity);
  connections.ready(client);
  const answers: (Error | null | undefined)[] = [];
  let seq = 0;
  const publish = (topic: string, payload: UPayload, options: { seq?: number } = {}) =>
    authorizePublish(
      deps,
      client as unknown as Client,
      {
        cmd: 'publish',
        topic,
        payload: encode({ seq: options.seq ?? seq++, ...payload }),
        qos: 0,
        retain: false,
        dup: false,
      } as PublishPacket,
      (err) => answers.push(err),
    );
  const nbirth = () => {
    seq = 0;
    publish('spBv1.0/plant-1/NBIRTH/edge-1', {
      timestamp: 1_000,
      metrics: [
        { name: 'bdSeq', type: 'UInt64', value: 0 },
        { name: 'Inputs/Temperature', alias: 1, type: 'Float', value: 20 },
      ],
    });
  };
  const dbirth = (device: string) =>
    publish(`spBv1.0/plant-1/DBIRTH/edge-1/${device}`, {
      timestamp: 1_000,
      metrics: [{ name: 'Position', alias: 20, type: 'UInt8', value: 40 }],
    });
  const subscribed: (string | null)[] = [];
  const subscribe = (topic: string) =>
    authorizeSubscribe(
      { connections, children: { speaksFor: () => false }, maxSubscriptions: 10, metrics: m, log },
      client as unknown as Client,
      { topic, qos: 0 } as Subscription,
      (_err, sub) => subscribed.push(sub?.topic ?? null),
    );
  return {
    m,
    presence,
    connections,
    client,
    stored,
    sent,
    answers,
    publish,
    nbirth,
    dbirth,
    subscribe,
    subscribed,
  };
}

describe('a gateway device publishing Sparkplug B', () => {
  it("stores node readings as the edge node's and device readings as its children's, labelled", () => {
    const { stored, presence, nbirth, dbirth, publish, answers, connections } = setup();
    nbirth();
    dbirth('pump-1');
    publish('spBv1.0/plant-1/DDATA/edge-1/pump-1', {
      timestamp: 2_000,
      metrics: [{ alias: 20, type: 'UInt8', value: 41 }],
    });
    expect(answers).toEqual([null, null, null]);
    expect(stored.map((s) => [s.identity.deviceId, s.identity.labels, s.parsed.readings[0]?.ok])).toEqual([
      ['edge-1', { site: 'north', sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' }, true],
      ['pump-1', { via: 'edge-1', sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' }, true],
      ['pump-1', { via: 'edge-1', sparkplug_group: 'plant-1', sparkplug_edge: 'edge-1' }, true],
    ]);
    expect(stored[1]!.identity.subject).toBe(telemetrySubject('acme', 'pump-1'));
    expect(connections.isOnline('pump-1')).toBe(true);
    expect(presence.events.filter((e) => e.type !== 'connected' || e.deviceId !== 'edge-1')).toEqual([
      {
        tenant: 'acme',
        deviceId: 'edge-1',
        clientId: 'edge-1',
        type: 'status',
        status: { sparkplug: 'NBIRTH', online: true },
        statusEncoding: 'json',
        statusBytes: '{"sparkplug":"NBIRTH","online":true}'.length,
        statusTruncated: false,
      },
      { tenant: 'acme', deviceId: 'pump-1', clientId: 'edge-1', type: 'connected' },
    ]);
  });

  it('refuses as an ACL violation what is not its own edge node, the host topics and a bad group', async () => {
    const { publish, answers, stored, m } = setup();
    publish('spBv1.0/plant-1/NBIRTH/edge-2', { metrics: [] });
    publish('spBv1.0/plant-1/NCMD/edge-1', { metrics: [] });
    publish('spBv1.0/plant-1/DCMD/edge-1/pump-1', { metrics: [] });
    publish('spBv1.0/STATE/host-1', { metrics: [] });
    publish('spBv1.0/pl\u0001ant/NBIRTH/edge-1', { metrics: [] });
    publish('spBv1.0/plant-1/NOPE/edge-1', { metrics: [] });
    expect(answers.map((a) => a instanceof AclDeniedError)).toEqual([true, true, true, true, true, true]);
    expect(stored).toEqual([]);
    expect(await count(m, 'gateway_acl_denied_total', { action: 'publish' })).toBe(6);
  });

  it('refuses Sparkplug B from a device that is not a gateway device', () => {
    const { publish, answers } = setup(PLAIN);
    publish('spBv1.0/plant-1/NBIRTH/plain-1', { metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }] });
    expect(answers[0]).toBeInstanceOf(AclDeniedError);
  });

  it("dead-letters a Sparkplug device that is not the gateway device's child under the edge node", () => {
    const { stored, presence, nbirth, dbirth, answers, connections } = setup();
    nbirth();
    dbirth('direct-1');
    dbirth('edge-1'); // a Sparkplug device named as its edge node: not the edge node's readings
    expect(answers).toEqual([null, null, null]);
    expect(stored[2]!.identity.deviceId).toBe('edge-1');
    expect(stored[2]!.parsed.readings).toEqual([
      expect.objectContaining({ ok: false, reason: 'CHILD_DENIED', index: undefined }),
    ]);
    expect(stored[1]!.identity.deviceId).toBe('edge-1');
    expect(stored[1]!.parsed.readings).toEqual([
      expect.objectContaining({ ok: false, reason: 'CHILD_DENIED', index: undefined }),
    ]);
    expect(connections.isOnline('direct-1')).toBe(false);
    expect(presence.events.some((e) => e.deviceId === 'direct-1')).toBe(false);
    expect(presence.events.filter((e) => e.type === 'status')).toHaveLength(1); // its NBIRTH's
  });

  it('asks for a rebirth on a seq gap and dead-letters the message', async () => {
    const { stored, sent, nbirth, dbirth, publish, m } = setup();
    nbirth();
    dbirth('valve-1');
    publish(
      'spBv1.0/plant-1/DDATA/edge-1/valve-1',
      { metrics: [{ alias: 20, type: 'UInt8', value: 41 }] },
      { seq: 7 },
    );
    expect(stored.at(-1)!.parsed.readings).toEqual([
      expect.objectContaining({ ok: false, reason: 'SPARKPLUG_SEQ_GAP' }),
    ]);
    expect(sent.map((c) => c.topic)).toEqual(['spBv1.0/plant-1/NCMD/edge-1']);
    expect(codec.decodePayload(sent[0]!.payload).metrics).toEqual([
      expect.objectContaining({ name: 'Node Control/Rebirth', value: true }),
    ]);
    expect(await count(m, 'gateway_sparkplug_rebirths_total')).toBe(1);
  });

  it('takes a device offline at its DDEATH and every device at the NDEATH, the connection staying', () => {
    const { presence, nbirth, dbirth, publish, connections, answers } = setup();
    nbirth();
    dbirth('pump-1');
    dbirth('valve-1');
    publish('spBv1.0/plant-1/DDEATH/edge-1/valve-1', { metrics: [] });
    expect(connections.isOnline('valve-1')).toBe(false);
    publish('spBv1.0/plant-1/NDEATH/edge-1', { metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }] });
    expect(answers).toEqual([null, null, null, null, null]);
    const edges = presence.events
      .filter((e) => e.deviceId !== 'edge-1' || e.type === 'status')
      .map((e) => [e.deviceId, e.type, e.reason ?? e.status]);
    expect(edges).toEqual([
      ['edge-1', 'status', { sparkplug: 'NBIRTH', online: true }],
      ['pump-1', 'connected', undefined],
      ['valve-1', 'connected', undefined],
      ['valve-1', 'disconnected', 'Sparkplug DDEATH'],
      ['edge-1', 'status', { sparkplug: 'NDEATH', online: false }],
      ['pump-1', 'disconnected', 'Sparkplug NDEATH'],
    ]);
    expect(connections.isOnline('pump-1')).toBe(false);
    expect(connections.isOnline('edge-1')).toBe(true);
  });

  it('subscribes to its own NCMD and DCMD and to host states, not to another edge node', () => {
    const { subscribe, subscribed } = setup();
    subscribe('spBv1.0/plant-1/NCMD/edge-1/#');
    subscribe('spBv1.0/plant-1/DCMD/edge-1/#');
    subscribe('spBv1.0/plant-1/NCMD/edge-1');
    subscribe('spBv1.0/STATE/host-1');
    subscribe('spBv1.0/plant-1/NCMD/edge-2/#');
    subscribe('spBv1.0/+/NCMD/edge-1/#');
    subscribe('spBv1.0/plant-1/NDATA/edge-1');
    subscribe('spBv1.0/STATE/+');
    expect(subscribed).toEqual([
      'spBv1.0/plant-1/NCMD/edge-1/#',
      'spBv1.0/plant-1/DCMD/edge-1/#',
      'spBv1.0/plant-1/NCMD/edge-1',
      'spBv1.0/STATE/host-1',
      null,
      null,
      null,
      null,
    ]);
  });

  it('does not tell a device online once registered when its DDEATH came while it was registered', async () => {
    let registered!: (v: ChildVerdict) => void;
    const pending = new Promise<ChildVerdict>((resolve) => {
      registered = resolve;
    });
    const { presence, nbirth, dbirth, publish, connections, stored } = setup(EDGE, { 'new-1': pending });
    nbirth();
    dbirth('new-1');
    publish('spBv1.0/plant-1/DDEATH/edge-1/new-1', { metrics: [] });
    registered({ ok: true, identity: child('new-1') });
    await pending;
    await new Promise((r) => setImmediate(r));
    expect(stored.map((s) => s.identity.deviceId)).toEqual(['edge-1', 'new-1']);
    expect(presence.events.some((e) => e.deviceId === 'new-1')).toBe(false);
    expect(connections.isOnline('new-1')).toBe(false);
  });
});
