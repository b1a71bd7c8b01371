import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { deviceOfClientId } from '../../contract/ids.js';
import { type SessionEvents, SessionStore } from '../../gateway/sessions/session-store.js';

/** The session store over aedes-persistence's memory store, with a broker stand-in and fake time. */

const EXPIRY_MS = 60_000;

class FakeBroker extends EventEmitter {
  clients: Record<string, { id: string; clean: boolean; closed: boolean } | undefined> = {};
  connect(id: string, clean = false) {
    this.clients[id] = { id, clean, closed: false };
    this.emit('clientReady', this.clients[id]);
  }
  disconnect(id: string) {
    const client = this.clients[id]!;
    client.closed = true;
    delete this.clients[id];
    this.emit('clientDisconnect', client);
  }
}

interface Store {
  setup(b: unknown): Promise<void>;
  addSubscriptions(c: { id: string }, s: { topic: string; qos: number }[]): Promise<void>;
  subscriptionsByClient(c: { id: string }): Promise<{ topic: string }[]>;
  subscriptionsByTopic(t: string): Promise<{ clientId: string }[]>;
  outgoingEnqueueCombi(s: { clientId: string }[], p: object): Promise<void>;
  outgoingUpdate(c: { id: string }, p: object): Promise<void>;
  outgoingClearMessageId(c: { id: string }, p: object): Promise<unknown>;
  outgoingStream(c: { id: string }): AsyncIterable<{ payload: Buffer }>;
  incomingStorePacket(c: { id: string }, p: object): Promise<void>;
  incomingGetPacket(c: { id: string }, p: object): Promise<{ payload: Buffer; messageId: number }>;
}

const command = (deviceId: string, n: number) => ({
  cmd: 'publish',
  topic: `devices/${deviceId}/commands/n`,
  payload: Buffer.from(String(n)),
  qos: 1,
  brokerId: 'b',
  brokerCounter: n,
});

async function setup(events: SessionEvents = {}, maxQueued = 2) {
  const broker = new FakeBroker();
  const sessions = new SessionStore({
    maxQueued,
    expiryMs: EXPIRY_MS,
    maxSubscriptions: 3,
    maxAwayPerDevice: 2,
    deviceOfClient: deviceOfClientId,
    events,
  });
  const store = sessions.persistence as Store;
  await store.setup(broker);
  return { broker, sessions, store };
}

const queuedPayloads = async (store: Store, id: string) => {
  const got: string[] = [];
  for await (const p of store.outgoingStream({ id })) got.push(p.payload.toString());
  return got;
};

describe('SessionStore', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('stores only the filters of the client id’s own device, at most as many as a connection may hold', async () => {
    const { store } = await setup();
    const client = { id: 'dev-a:modem' };
    await store.addSubscriptions(client, [
      { topic: 'devices/dev-a/commands/#', qos: 1 },
      { topic: 'devices/dev-b/commands/#', qos: 1 },
      { topic: '#', qos: 1 },
      { topic: 'devices/+/commands/#', qos: 1 },
    ]);
    expect((await store.subscriptionsByClient(client)).map((s) => s.topic)).toEqual([
      'devices/dev-a/commands/#',
    ]);
    expect(await store.subscriptionsByTopic('devices/dev-b/commands/x')).toEqual([]);
    await store.addSubscriptions(
      client,
      ['x', 'y', 'z', 'w'].map((leaf) => ({ topic: `devices/dev-a/commands/${leaf}`, qos: 1 })),
    );
    expect(await store.subscriptionsByClient(client)).toHaveLength(3);
  });

  it('queues for an away session up to the bound, then drops and says so', async () => {
    const full: string[] = [];
    const queued: string[] = [];
    const { sessions, store } = await setup({
      queueFull: (id) => full.push(id),
      queued: (id) => queued.push(id),
    });
    for (let n = 1; n <= 4; n++)
      await store.outgoingEnqueueCombi([{ clientId: 'dev-a' }], command('dev-a', n));
    expect(await queuedPayloads(store, 'dev-a')).toEqual(['1', '2']);
    expect(full).toEqual(['dev-a', 'dev-a']);
    expect(queued).toEqual(['dev-a', 'dev-a']);
    // Acknowledged (or dropped on a clean reconnect), a queued command makes room.
    await store.outgoingClearMessageId({ id: 'dev-a' }, { messageId: undefined });
    expect(sessions.queuedFor('dev-a')).toBe(1);
    await store.outgoingEnqueueCombi([{ clientId: 'dev-a' }], command('dev-a', 5));
    expect(await queuedPayloads(store, 'dev-a')).toEqual(['2', '5']);
  });

  it('holds at most the bound unacknowledged for a connected client: beyond, the forward is refused', async () => {
    const backlogged: string[] = [];
    const full: string[] = [];
    const { broker, sessions, store } = await setup({
      backlogged: (id) => backlogged.push(id),
      queueFull: (id) => full.push(id),
    });
    broker.connect('dev-b');
    const commands = [1, 2, 3, 4].map((n) => command('dev-b', n));
    for (const c of commands) await store.outgoingEnqueueCombi([{ clientId: 'dev-b' }], c);
    expect(sessions.queuedFor('dev-b')).toBe(2);
    expect(backlogged).toEqual(['dev-b', 'dev-b']);
    expect(full).toEqual([]);
    // The two over the bound are not written to it (aedes then clears them: nothing is removed).
    expect(sessions.authorizeForward({ id: 'dev-b' }, commands[0]!)).toBe(commands[0]);
    expect(sessions.authorizeForward({ id: 'dev-b' }, commands[2]!)).toBeNull();
    await store.outgoingClearMessageId({ id: 'dev-b' }, commands[2]!);
    expect(await queuedPayloads(store, 'dev-b')).toEqual(['1', '2']);
    // Acknowledged, a command makes room.
    await store.outgoingUpdate({ id: 'dev-b' }, { ...commands[0]!, messageId: 11 });
    await store.outgoingClearMessageId({ id: 'dev-b' }, { messageId: 11 });
    await store.outgoingEnqueueCombi([{ clientId: 'dev-b' }], command('dev-b', 5));
    expect(await queuedPayloads(store, 'dev-b')).toEqual(['2', '5']);
  });

  it('clears a refused forward by its broker counter, never another command not yet written', async () => {
    const { broker, sessions, store } = await setup({}, 10);
    broker.connect('dev-b');
    const commands = [1, 2, 3].map((n) => command('dev-b', n));
    for (const c of commands) await store.outgoingEnqueueCombi([{ clientId: 'dev-b' }], c);
    // aedes refused the third (a backlogged connection) while the first two wait to be written.
    await store.outgoingClearMessageId({ id: 'dev-b' }, { ...commands[2]!, messageId: undefined });
    expect(await queuedPayloads(store, 'dev-b')).toEqual(['1', '2']);
    expect(sessions.queuedFor('dev-b')).toBe(2);
    // The first is then written: aedes finds it.
    await expect(
      store.outgoingUpdate({ id: 'dev-b' }, { ...commands[0]!, messageId: 1 }),
    ).resolves.toBeUndefined();
  });

  it('forgets a session away for SESSION_EXPIRY_MS, queue and subscriptions, and not one that came back', async () => {
    const expired: string[] = [];
    const { broker, sessions, store } = await setup({ expired: (id) => expired.push(id) });
    for (const id of ['dev-a', 'dev-b']) {
      broker.connect(id);
      await store.addSubscriptions({ id }, [{ topic: `devices/${id}/commands/#`, qos: 1 }]);
      broker.disconnect(id);
      await store.outgoingEnqueueCombi([{ clientId: id }], command(id, 1));
      await vi.advanceTimersByTimeAsync(10_000);
    }
    expect(sessions.away).toBe(2);
    broker.connect('dev-b'); // back in time
    await vi.advanceTimersByTimeAsync(EXPIRY_MS - 25_000); // dev-a away 55 s
    expect(expired).toEqual([]);
    await vi.advanceTimersByTimeAsync(20_000); // away for EXPIRY_MS, and a sweep (every EXPIRY_MS / 4) since
    expect(expired).toEqual(['dev-a']);
    expect(await store.subscriptionsByClient({ id: 'dev-a' })).toEqual([]);
    expect(await queuedPayloads(store, 'dev-a')).toEqual([]);
    expect(sessions.queuedFor('dev-a')).toBe(0);
    expect(await store.subscriptionsByClient({ id: 'dev-b' })).toHaveLength(1);
    expect(sessions.away).toBe(0);
    // A clean client leaves no session to expire.
    broker.connect('dev-c', true);
    broker.disconnect('dev-c');
    expect(sessions.away).toBe(0);
  });

  it('keeps a QoS 2 publish awaiting PUBREL by its packet id only', async () => {
    const { store } = await setup();
    const client = { id: 'dev-a' };
    await store.incomingStorePacket(client, {
      ...command('dev-a', 1),
      messageId: 7,
      payload: Buffer.alloc(100_000),
    });
    const stored = await store.incomingGetPacket(client, { messageId: 7 });
    expect(stored.messageId).toBe(7);
    expect(stored.payload.length).toBe(0);
  });

  it('forwards a publish only to a client of the device it is for (AUTH_MODE=open: to anyone)', async () => {
    const { sessions } = await setup();
    const packet = { topic: 'devices/dev-a/commands/reboot' };
    expect(sessions.authorizeForward({ id: 'dev-a:modem' }, packet)).toBe(packet);
    expect(sessions.authorizeForward({ id: 'dev-b' }, packet)).toBeNull();
    expect(sessions.authorizeForward({ id: 'dev-a' }, { topic: 'devices/dev-a/telemetry' })).toBeNull();
    const open = new SessionStore({
      maxQueued: 1,
      expiryMs: 1_000,
      maxSubscriptions: 1,
      maxAwayPerDevice: 1,
      deviceOfClient: undefined,
    });
    expect(open.authorizeForward({ id: 'anything' }, packet)).toBe(packet);
  });

  it('keeps at most MAX_SESSIONS_PER_DEVICE away sessions of one device, forgetting the oldest', async () => {
    const evicted: string[] = [];
    const { broker, sessions, store } = await setup({ evicted: (id) => evicted.push(id) });
    for (const id of ['dev-a:1', 'dev-a:2', 'dev-b', 'dev-a:3']) {
      broker.connect(id);
      await store.addSubscriptions({ id }, [{ topic: `devices/${id.split(':')[0]}/commands/#`, qos: 1 }]);
      broker.disconnect(id);
    }
    await vi.advanceTimersByTimeAsync(0);
    expect(evicted).toEqual(['dev-a:1']);
    expect(await store.subscriptionsByClient({ id: 'dev-a:1' })).toEqual([]);
    expect(await store.subscriptionsByClient({ id: 'dev-a:3' })).toHaveLength(1);
    expect(sessions.away).toBe(3);
    // Back, a session is no longer away and does not count.
    broker.connect('dev-a:2');
    broker.connect('dev-a:4');
    broker.disconnect('dev-a:4');
    await vi.advanceTimersByTimeAsync(0);
    expect(evicted).toEqual(['dev-a:1']);
  });

  it('forgets a session whose client id moved to another gateway: at once if away, else as it closes', async () => {
    const { broker, sessions, store } = await setup();
    const subscribe = (id: string) =>
      store.addSubscriptions({ id }, [{ topic: 'devices/dev-a/commands/#', qos: 1 }]);
    // Away here: forgotten at once, queue and all.
    broker.connect('dev-a:1');
    await subscribe('dev-a:1');
    broker.disconnect('dev-a:1');
    await store.outgoingEnqueueCombi([{ clientId: 'dev-a:1' }], command('dev-a', 1));
    expect(sessions.away).toBe(1);
    expect(sessions.movedAway('dev-a:1')).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(sessions.away).toBe(0);
    expect(await store.subscriptionsByClient({ id: 'dev-a:1' })).toEqual([]);
    expect(await queuedPayloads(store, 'dev-a:1')).toEqual([]);
    // Connected here: forgotten when its connection closes, never away.
    broker.connect('dev-a:2');
    await subscribe('dev-a:2');
    expect(sessions.movedAway('dev-a:2')).toBe(true);
    broker.disconnect('dev-a:2');
    await vi.advanceTimersByTimeAsync(0);
    expect(sessions.away).toBe(0);
    expect(await store.subscriptionsByClient({ id: 'dev-a:2' })).toEqual([]);
    // Its next session here is kept as usual.
    broker.connect('dev-a:2');
    broker.disconnect('dev-a:2');
    expect(sessions.away).toBe(1);
  });

  it('has nothing to forget for a clean session or an unknown client id', async () => {
    const { broker, sessions } = await setup();
    broker.connect('dev-a', true);
    expect(sessions.movedAway('dev-a')).toBe(false);
    expect(sessions.movedAway('dev-z')).toBe(false);
  });
});
