import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { deviceOfClientId } from '../../contract/ids.js';
import { SessionStore } from '../../gateway/sessions/session-store.js';

/**
 * A gateway device's session (README, Gateway devices): it may hold `devices/+/commands/#`, which
 * matches every device's commands, so only its own and its children's are forwarded or queued.
 */

interface Store {
  setup(b: unknown): Promise<void>;
  addSubscriptions(c: { id: string }, s: { topic: string; qos: number }[]): Promise<void>;
  subscriptionsByClient(c: { id: string }): Promise<{ topic: string }[]>;
  outgoingEnqueueCombi(s: { clientId: string }[], p: object): Promise<void>;
  outgoingStream(c: { id: string }): AsyncIterable<{ payload: Buffer }>;
}

const command = (deviceId: string, n: number) => ({
  cmd: 'publish',
  topic: `devices/${deviceId}/commands/n`,
  payload: Buffer.from(String(n)),
  qos: 1,
  brokerId: 'b',
  brokerCounter: n,
});

async function setup() {
  const broker = Object.assign(new EventEmitter(), { clients: {} });
  const queued: string[] = [];
  const sessions = new SessionStore({
    maxQueued: 10,
    expiryMs: 60_000,
    maxSubscriptions: 10,
    maxAwayPerDevice: 2,
    deviceOfClient: deviceOfClientId,
    children: {
      isGateway: (id) => id === 'site-1',
      speaksFor: (gateway, child) => gateway === 'site-1' && child === 'meter-a',
    },
    events: { queued: (_id, p) => queued.push(p.topic) },
  });
  const store = sessions.persistence as Store;
  await store.setup(broker);
  return { sessions, store, queued };
}

describe('SessionStore with gateway devices', () => {
  it("stores a gateway device's children's filters and devices/+/commands/#, another device's not", async () => {
    const { store } = await setup();
    const filters = ['devices/+/commands/#', 'devices/meter-a/commands/#', 'devices/direct-1/commands/#'];
    await store.addSubscriptions(
      { id: 'site-1' },
      filters.map((topic) => ({ topic, qos: 1 })),
    );
    await store.addSubscriptions({ id: 'dev-1' }, [{ topic: 'devices/+/commands/#', qos: 1 }]);
    expect((await store.subscriptionsByClient({ id: 'site-1' })).map((s) => s.topic).sort()).toEqual(
      filters.slice(0, 2).sort(),
    );
    expect(await store.subscriptionsByClient({ id: 'dev-1' })).toEqual([]);
  });

  it("forwards and queues only its own and its children's commands", async () => {
    const { sessions, store, queued } = await setup();
    const child = command('meter-a', 1);
    const own = command('site-1', 2);
    const other = command('direct-1', 3);
    expect(sessions.authorizeForward({ id: 'site-1' }, child)).toBe(child);
    expect(sessions.authorizeForward({ id: 'site-1' }, own)).toBe(own);
    expect(sessions.authorizeForward({ id: 'site-1' }, other)).toBeNull();
    expect(sessions.authorizeForward({ id: 'dev-1' }, child)).toBeNull();
    // Away: another device's command is neither queued nor said to be.
    for (const packet of [child, own, other])
      await store.outgoingEnqueueCombi([{ clientId: 'site-1' }], packet);
    const held: string[] = [];
    for await (const p of store.outgoingStream({ id: 'site-1' })) held.push(p.payload.toString());
    expect(held).toEqual(['1', '2']);
    expect(queued).toEqual(['devices/meter-a/commands/n', 'devices/site-1/commands/n']);
  });

  it("keeps and forwards a Sparkplug edge node's own NCMD and DCMD, and host STATE", async () => {
    const { sessions, store } = await setup();
    const filters = [
      'spBv1.0/plant-1/NCMD/site-1/#',
      'spBv1.0/plant-1/DCMD/site-1/#',
      'spBv1.0/STATE/host-1',
      'spBv1.0/plant-1/NCMD/edge-2/#',
    ];
    await store.addSubscriptions(
      { id: 'site-1' },
      filters.map((topic) => ({ topic, qos: 0 })),
    );
    expect((await store.subscriptionsByClient({ id: 'site-1' })).map((s) => s.topic).sort()).toEqual(
      filters.slice(0, 3).sort(),
    );
    const packet = (topic: string) => ({ topic, payload: Buffer.from('x') });
    for (const topic of [
      'spBv1.0/plant-1/NCMD/site-1',
      'spBv1.0/plant-1/DCMD/site-1/meter-a',
      'spBv1.0/STATE/host-1',
    ]) {
      const p = packet(topic);
      expect(sessions.authorizeForward({ id: 'site-1' }, p)).toBe(p);
    }
    for (const topic of ['spBv1.0/plant-1/NCMD/edge-2', 'spBv1.0/plant-1/NDATA/site-1'])
      expect(sessions.authorizeForward({ id: 'site-1' }, packet(topic))).toBeNull();
    expect(sessions.authorizeForward({ id: 'dev-1' }, packet('spBv1.0/plant-1/NCMD/site-1'))).toBeNull();
  });
});
