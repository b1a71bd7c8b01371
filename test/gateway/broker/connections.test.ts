import type { Client } from 'aedes';
import { describe, expect, it } from 'vitest';
import { Connections } from '../../../gateway/broker/connections.js';
import { deviceIdentity } from '../../../gateway/ingest/telemetry-handler.js';
import { fakeClient, limitCount, log, metrics, presenceRecorder } from './fixtures.js';

function setup(o: { maxPerDevice?: number; openMode?: boolean } = {}) {
  const presence = presenceRecorder();
  const m = metrics();
  const connections = new Connections({
    maxPerDevice: o.maxPerDevice ?? 8,
    openMode: o.openMode ?? false,
    presence,
    metrics: m,
    log,
  });
  return { connections, presence, m };
}

const dev1 = deviceIdentity('dev-1', 'acme', {});

describe('Connections', () => {
  it('publishes connected when a device connection is ready and tracks it as online', () => {
    const { connections, presence } = setup();
    const client = fakeClient('dev-1');
    connections.accepted(client, dev1);
    expect(connections.isOnline('dev-1')).toBe(false);
    connections.ready(client);
    expect(connections.isOnline('dev-1')).toBe(true);
    expect(presence.events).toEqual([
      { tenant: 'acme', deviceId: 'dev-1', clientId: 'dev-1', type: 'connected' },
    ]);
  });

  it('says disconnected after a DISCONNECT, lost with the first reason given otherwise', () => {
    const { connections, presence } = setup();
    const clean = fakeClient('dev-1');
    const dropped = fakeClient('dev-1:b');
    for (const c of [clean, dropped]) {
      connections.accepted(c, dev1);
      connections.ready(c);
    }
    clean._disconnected = true;
    connections.disconnected(clean as unknown as Client);
    connections.markLost(dropped, 'keepalive timeout');
    connections.markLost(dropped, 'later reason');
    connections.disconnected(dropped as unknown as Client);
    expect(presence.events.slice(2)).toEqual([
      { tenant: 'acme', deviceId: 'dev-1', clientId: 'dev-1', type: 'disconnected' },
      { tenant: 'acme', deviceId: 'dev-1', clientId: 'dev-1:b', type: 'lost', reason: 'keepalive timeout' },
    ]);
    expect(connections.isOnline('dev-1')).toBe(false);
  });

  it("says 'connection closed' for a connection lost without a reason", () => {
    const { connections, presence } = setup();
    const client = fakeClient('dev-1');
    connections.accepted(client, dev1);
    connections.ready(client);
    connections.disconnected(client as unknown as Client);
    expect(presence.events.at(-1)).toMatchObject({ type: 'lost', reason: 'connection closed' });
  });

  it('closes the oldest open connection past MAX_CONNECTIONS_PER_DEVICE, never the new one', async () => {
    const { connections, m } = setup({ maxPerDevice: 2 });
    const [a, b, c] = ['dev-1:a', 'dev-1:b', 'dev-1:c'].map(fakeClient) as [
      ReturnType<typeof fakeClient>,
      ReturnType<typeof fakeClient>,
      ReturnType<typeof fakeClient>,
    ];
    for (const client of [a, b, c]) {
      connections.accepted(client, dev1);
      connections.ready(client);
    }
    expect([a.closes, b.closes, c.closes]).toEqual([1, 0, 0]);
    expect(connections.state(a)?.lostReason).toBe('connection limit');
    expect(await limitCount(m, 'MAX_CONNECTIONS_PER_DEVICE')).toBe(1);
  });

  it('does not count connections already closed against the limit', () => {
    const { connections } = setup({ maxPerDevice: 1 });
    const a = fakeClient('dev-1:a');
    const b = fakeClient('dev-1:b');
    connections.accepted(a, dev1);
    connections.ready(a);
    a.closed = true; // closing, its clientDisconnect not yet seen
    connections.accepted(b, dev1);
    connections.ready(b);
    expect(a.closes).toBe(0);
    expect(b.closes).toBe(0);
  });

  it('binds an open-mode client to the first device it names, once', () => {
    const { connections, presence } = setup({ openMode: true });
    const client = fakeClient('anything');
    connections.accepted(client, undefined);
    connections.ready(client);
    expect(presence.events).toEqual([]);
    expect(connections.identityFor(client, 'dev-7')?.deviceId).toBe('dev-7');
    expect(connections.identityFor(client, 'dev-8')?.deviceId).toBe('dev-7');
    expect(presence.events).toEqual([
      { tenant: 'default', deviceId: 'dev-7', clientId: 'anything', type: 'connected' },
    ]);
  });

  it('never binds in registry mode', () => {
    const { connections } = setup();
    const client = fakeClient('x');
    connections.accepted(client, undefined);
    expect(connections.identityFor(client, 'dev-7')).toBeUndefined();
    expect(connections.identityFor(fakeClient('unknown'), 'dev-7')).toBeUndefined();
  });

  it('disconnectDevice closes every connection of the device with the reason given', () => {
    const { connections, presence } = setup();
    const a = fakeClient('dev-1:a');
    const b = fakeClient('dev-1:b');
    for (const c of [a, b]) {
      connections.accepted(c, dev1);
      connections.ready(c);
    }
    expect(connections.disconnectDevice('dev-1', 'removed')).toBe(2);
    expect(connections.disconnectDevice('dev-2', 'removed')).toBe(0);
    for (const c of [a, b]) connections.disconnected(c as unknown as Client);
    expect(presence.events.slice(2).map((e) => e.reason)).toEqual(['removed', 'removed']);
  });

  it("closes the connection under a client id another gateway took over, lost 'taken over'", () => {
    const { connections, presence } = setup();
    const old = fakeClient('dev-1');
    const other = fakeClient('dev-1:b');
    for (const c of [old, other]) {
      connections.accepted(c, dev1);
      connections.ready(c);
    }
    expect(connections.takeOver('dev-1', 'gw-b')).toBe(true);
    expect([old.closes, other.closes]).toEqual([1, 0]);
    connections.disconnected(old as unknown as Client);
    expect(presence.events.at(-1)).toMatchObject({ clientId: 'dev-1', type: 'lost', reason: 'taken over' });
    expect(connections.takeOver('dev-1', 'gw-b')).toBe(false); // gone
    expect(connections.takeOver('dev-9', 'gw-b')).toBe(false);
  });

  it('takes over the newest connection under an id, not one aedes already replaced', () => {
    const { connections } = setup();
    const first = fakeClient('dev-1');
    const second = fakeClient('dev-1');
    connections.accepted(first, dev1);
    connections.ready(first);
    connections.accepted(second, dev1);
    connections.ready(second);
    first.close(); // aedes closes the older connection under the same id
    connections.disconnected(first as unknown as Client);
    expect(connections.takeOver('dev-1', 'gw-b')).toBe(true);
    expect(second.closes).toBe(1);
  });
});
