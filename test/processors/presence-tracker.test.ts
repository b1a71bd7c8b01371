import { describe, expect, it } from 'vitest';
import { type GatewayHeartbeat, HEARTBEAT_MISSES, type PresenceEvent } from '../../contract/index.js';
import type { ProcessorLimit } from '../../processors/metrics.js';
import {
  GATEWAY_LOST,
  type PresenceLimits,
  PresenceTracker,
  presenceStateMaxBytes,
} from '../../processors/presence/presence-tracker.js';

const T0 = Date.parse('2026-11-28T00:00:00.000Z');
const S = 1_000;
const DEFAULT_INTERVAL_MS = 5 * S;
const iso = (ms: number) => new Date(ms).toISOString();

function ev(type: PresenceEvent['type'], atMs: number, over: Partial<PresenceEvent> = {}): PresenceEvent {
  return {
    tenant: 'acme',
    deviceId: 'd1',
    clientId: 'd1',
    gateway: 'gw-a',
    type,
    at: iso(atMs),
    ...over,
  };
}

const hb = (gateway: string, intervalMs = DEFAULT_INTERVAL_MS): GatewayHeartbeat => ({
  gateway,
  at: iso(T0),
  intervalMs,
  connections: 0,
});

const tracker = (nowMs = T0) =>
  new PresenceTracker({ defaultHeartbeatIntervalMs: DEFAULT_INTERVAL_MS, nowMs });

describe('PresenceTracker', () => {
  it('goes online on connect and offline on a clean disconnect, one row per flip', () => {
    const t = tracker();
    const on = t.apply(ev('connected', T0 + S));
    expect(on.rows).toEqual([
      { tenant: 'acme', deviceId: 'd1', online: true, reason: 'connected', atMs: T0 + S },
    ]);
    expect(on.states).toEqual([
      {
        tenant: 'acme',
        deviceId: 'd1',
        online: true,
        reason: 'connected',
        since: iso(T0 + S),
        connections: [{ gateway: 'gw-a', clientId: 'd1', since: iso(T0 + S) }],
      },
    ]);
    const off = t.apply(ev('disconnected', T0 + 5 * S));
    expect(off.rows).toEqual([
      { tenant: 'acme', deviceId: 'd1', online: false, reason: 'disconnected', atMs: T0 + 5 * S },
    ]);
    expect(t.get('acme', 'd1')).toMatchObject({ online: false, since: iso(T0 + 5 * S), connections: [] });
  });

  it('keeps a device with two connections online until the last one goes', () => {
    const t = tracker();
    t.apply(ev('connected', T0, { clientId: 'd1:modem' }));
    const second = t.apply(ev('connected', T0 + S, { clientId: 'd1:wifi', gateway: 'gw-b' }));
    expect(second.rows).toEqual([]);
    expect(second.states[0]!.connections).toHaveLength(2);
    expect(second.states[0]!.since).toBe(iso(T0)); // online did not change
    const first = t.apply(ev('lost', T0 + 2 * S, { clientId: 'd1:modem', reason: 'keepalive timeout' }));
    expect(first.rows).toEqual([]);
    expect(first.states[0]).toMatchObject({ online: true, connections: [{ clientId: 'd1:wifi' }] });
    const last = t.apply(ev('disconnected', T0 + 3 * S, { clientId: 'd1:wifi', gateway: 'gw-b' }));
    expect(last.rows).toEqual([expect.objectContaining({ online: false, reason: 'disconnected' })]);
  });

  it('takes a lost connection as offline with reason lost', () => {
    const t = tracker();
    t.apply(ev('connected', T0));
    const lost = t.apply(ev('lost', T0 + 9 * S, { reason: 'keepalive timeout' }));
    expect(lost.rows).toEqual([
      { tenant: 'acme', deviceId: 'd1', online: false, reason: 'lost', atMs: T0 + 9 * S },
    ]);
  });

  it('replaces the connection of a client that reconnects on the same gateway and ignores the late end of the old one', () => {
    const t = tracker();
    t.apply(ev('connected', T0));
    const again = t.apply(ev('connected', T0 + 10 * S));
    expect(again.rows).toEqual([]);
    expect(again.states[0]!.connections).toEqual([
      { gateway: 'gw-a', clientId: 'd1', since: iso(T0 + 10 * S) },
    ]);
    // The old connection's `lost`, published late: it is about a connection that no longer exists.
    expect(t.apply(ev('lost', T0 + 5 * S))).toEqual({ states: [], rows: [] });
    expect(t.get('acme', 'd1')!.online).toBe(true);
  });

  it('keeps the last status payload across connections', () => {
    const t = tracker();
    t.apply(ev('connected', T0));
    const birth = t.apply(ev('status', T0 + 1, { status: { online: true, fw: '1.4.2' } }));
    expect(birth.rows).toEqual([]);
    expect(birth.states[0]!.status).toEqual({ online: true, fw: '1.4.2' });
    t.apply(ev('status', T0 + 2 * S, { status: { online: false } })); // the will
    t.apply(ev('lost', T0 + 2 * S));
    expect(t.get('acme', 'd1')).toMatchObject({ online: false, status: { online: false } });
    expect(t.apply(ev('status', T0 + 3 * S, { status: { online: false } })).states).toEqual([]);
    t.apply(ev('connected', T0 + 4 * S));
    expect(t.get('acme', 'd1')).toMatchObject({ online: true, status: { online: false } });
  });

  it('keeps the status of a device it has not seen connect, as offline, without a row', () => {
    const t = tracker();
    const changes = t.apply(ev('status', T0, { status: 'hello' }));
    expect(changes.rows).toEqual([]);
    expect(changes.states[0]).toMatchObject({ online: false, status: 'hello', connections: [] });
  });

  it("takes a silent gateway's connections as lost and leaves other gateways' alone", () => {
    const t = tracker();
    t.heartbeat(hb('gw-a'), T0);
    t.heartbeat(hb('gw-b', 2 * S), T0);
    t.apply(ev('connected', T0, { deviceId: 'a1', clientId: 'a1' }));
    t.apply(ev('connected', T0, { deviceId: 'both', clientId: 'both:1' }));
    t.apply(ev('connected', T0, { deviceId: 'both', clientId: 'both:2', gateway: 'gw-b' }));
    t.apply(ev('connected', T0, { deviceId: 'b1', clientId: 'b1', gateway: 'gw-b' }));

    // gw-a keeps beating; gw-b (2 s interval) falls silent after T0.
    for (let ms = S; ms <= 3 * 2 * S; ms += S) {
      t.heartbeat(hb('gw-a'), T0 + ms);
      expect(t.tick(T0 + ms).states).toEqual([]);
    }
    const timeout = t.tick(T0 + HEARTBEAT_MISSES * 2 * S + 1);
    expect(timeout.lostGateways).toEqual(['gw-b']);
    expect(timeout.rows).toEqual([
      { tenant: 'acme', deviceId: 'b1', online: false, reason: GATEWAY_LOST, atMs: T0 + 6 * S + 1 },
    ]);
    expect(timeout.states.map((s) => s.deviceId).sort()).toEqual(['b1', 'both']);
    expect(t.get('acme', 'both')).toMatchObject({ online: true, connections: [{ gateway: 'gw-a' }] });
    expect(t.get('acme', 'b1')).toMatchObject({
      online: false,
      reason: GATEWAY_LOST,
      since: iso(T0 + 6 * S + 1),
    });
    expect(t.get('acme', 'a1')!.online).toBe(true);
    expect(t.tick(T0 + 7 * S).states).toEqual([]); // judged once
  });

  it('starts the clock of a gateway known only from an event at the first tick that sees it', () => {
    const t = tracker();
    t.apply(ev('connected', T0));
    t.tick(T0 + 10 * S);
    expect(t.tick(T0 + 10 * S + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS).rows).toEqual([]);
    expect(t.tick(T0 + 10 * S + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS + 1).rows).toEqual([
      expect.objectContaining({ deviceId: 'd1', online: false, reason: GATEWAY_LOST }),
    ]);
  });

  it('restores states and finds a gateway that died while no owner ran', () => {
    const before = tracker();
    before.heartbeat(hb('gw-dead'), T0);
    before.heartbeat(hb('gw-alive'), T0);
    before.apply(ev('connected', T0, { deviceId: 'x', clientId: 'x', gateway: 'gw-dead' }));
    before.apply(ev('connected', T0, { deviceId: 'y', clientId: 'y', gateway: 'gw-alive' }));
    const saved = [before.get('acme', 'x')!, before.get('acme', 'y')!];

    const restoredAt = T0 + 60 * S;
    const after = tracker(restoredAt);
    after.restore(saved);
    expect(after.size).toBe(2);
    const deadline = restoredAt + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS;
    for (let ms = restoredAt; ms < deadline; ms += S) {
      after.heartbeat(hb('gw-alive'), ms);
      expect(after.tick(ms).rows).toEqual([]);
    }
    after.heartbeat(hb('gw-alive'), deadline + 1);
    const changes = after.tick(deadline + 1);
    expect(changes.lostGateways).toEqual(['gw-dead']);
    expect(changes.rows).toEqual([
      { tenant: 'acme', deviceId: 'x', online: false, reason: GATEWAY_LOST, atMs: deadline + 1 },
    ]);
    expect(after.get('acme', 'y')!.online).toBe(true);
  });

  it('gives every gateway a full timeout again when the owner could not hear heartbeats', () => {
    const t = tracker();
    t.heartbeat(hb('gw-a'), T0);
    t.apply(ev('connected', T0));
    const back = T0 + 60 * S; // e.g. the owner's NATS connection was down this long
    t.restartClocks(back);
    expect(t.tick(back + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS).rows).toEqual([]);
    expect(t.tick(back + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS + 1).rows).toHaveLength(1);
  });

  it('changes nothing when an event is applied again', () => {
    const t = tracker();
    const events = [
      ev('connected', T0),
      ev('status', T0 + 1, { status: { fw: 1 } }),
      ev('connected', T0 + S, { clientId: 'd1:b' }),
      ev('lost', T0 + 2 * S, { clientId: 'd1:b' }),
      ev('disconnected', T0 + 3 * S),
    ];
    for (const e of events) {
      expect(t.apply(e).states).toHaveLength(1);
      expect(t.apply(e)).toEqual({ states: [], rows: [] });
    }
  });

  it('replays from an older checkpoint without flipping anything, even past a gateway timeout', () => {
    const t = tracker();
    const events = [
      ev('connected', T0),
      ev('disconnected', T0 + S),
      ev('connected', T0 + 2 * S, { deviceId: 'd2', clientId: 'd2', gateway: 'gw-gone' }),
    ];
    const rows = events.flatMap((e, i) => t.apply(e, i + 1).rows);
    expect(rows.map((r) => [r.deviceId, r.online])).toEqual([
      ['d1', true],
      ['d1', false],
      ['d2', true],
    ]);
    t.tick(T0 + 3 * S);
    expect(t.tick(T0 + 3 * S + HEARTBEAT_MISSES * DEFAULT_INTERVAL_MS + 1).rows).toHaveLength(1);

    // A crash: the states were saved, the checkpoint was still at 0. The next owner restores and replays.
    const next = tracker(T0 + 60 * S);
    next.restore([t.get('acme', 'd1')!, t.get('acme', 'd2')!]);
    for (const [i, e] of events.entries()) expect(next.apply(e, i + 1)).toEqual({ states: [], rows: [] });
    expect(next.get('acme', 'd2')).toMatchObject({ online: false, reason: GATEWAY_LOST, seq: 3 });
    // New events still apply.
    expect(next.apply(ev('connected', T0 + 70 * S), 4).rows).toEqual([
      expect.objectContaining({ deviceId: 'd1', online: true }),
    ]);
  });

  it('forgets stream sequences when the stream was recreated', () => {
    const t = tracker();
    t.apply(ev('connected', T0), 40);
    const changes = t.forgetSequences();
    expect(changes.rows).toEqual([]);
    expect(changes.states[0]!.seq).toBeUndefined();
    expect(t.apply(ev('disconnected', T0 + S), 1).rows).toHaveLength(1);
  });

  it('never mutates a state it returned', () => {
    const t = tracker();
    const [first] = t.apply(ev('connected', T0)).states;
    const snapshot = structuredClone(first);
    t.apply(ev('connected', T0 + S, { clientId: 'd1:b' }));
    t.apply(ev('disconnected', T0 + 2 * S));
    expect(first).toEqual(snapshot);
  });
});

describe('PresenceTracker bounds', () => {
  const limits: PresenceLimits = {
    maxConnections: 3,
    maxClientIdBytes: 64,
    maxStatusBytes: 100,
    maxGateways: 2,
  };
  const bounded = () => {
    const hits: ProcessorLimit[] = [];
    const t = new PresenceTracker({
      defaultHeartbeatIntervalMs: DEFAULT_INTERVAL_MS,
      nowMs: T0,
      limits,
      onLimit: (limit, n = 1) => hits.push(...Array<ProcessorLimit>(n).fill(limit)),
    });
    return { t, hits };
  };

  it('keeps the newest PRESENCE_MAX_CONNECTIONS connections of a device, counting the ones it drops', () => {
    const { t, hits } = bounded();
    for (let i = 0; i < 5; i++) t.apply(ev('connected', T0 + i * S, { clientId: `d1:${i}` }));
    expect(t.get('acme', 'd1')!.connections.map((c) => c.clientId)).toEqual(['d1:2', 'd1:3', 'd1:4']);
    expect(hits).toEqual(['PRESENCE_MAX_CONNECTIONS', 'PRESENCE_MAX_CONNECTIONS']);
    // A dropped connection ending changes nothing; the kept ones still decide.
    expect(t.apply(ev('lost', T0 + 6 * S, { clientId: 'd1:0' })).states).toEqual([]);
    for (const i of [2, 3]) t.apply(ev('lost', T0 + 7 * S, { clientId: `d1:${i}` }));
    expect(t.apply(ev('lost', T0 + 8 * S, { clientId: 'd1:4' })).rows).toMatchObject([{ online: false }]);
  });

  it('keeps a client id longer than PRESENCE_MAX_CLIENT_ID_BYTES as its digest, which its `lost` still finds', () => {
    const { t, hits } = bounded();
    const long = `d1:${'é'.repeat(40)}`; // 43 characters, 83 bytes
    t.apply(ev('connected', T0, { clientId: long }));
    t.apply(ev('connected', T0, { clientId: 'd1:short' }));
    const kept = t.get('acme', 'd1')!.connections.map((c) => c.clientId);
    expect(kept[0]).toMatch(/^#sha256:[A-Za-z0-9_-]{43}$/);
    expect(kept[1]).toBe('d1:short');
    expect(hits).toEqual(['PRESENCE_MAX_CLIENT_ID_BYTES']);
    t.apply(ev('lost', T0 + S, { clientId: long }));
    expect(t.get('acme', 'd1')!.connections.map((c) => c.clientId)).toEqual(['d1:short']);
  });

  it('keeps a status over PRESENCE_MAX_STATUS_BYTES as its size and digest, and still sees it change', () => {
    const { t, hits } = bounded();
    t.apply(ev('status', T0, { status: { fw: '1.0' } }));
    expect(t.get('acme', 'd1')!.status).toEqual({ fw: '1.0' });
    const big = { fw: '1.1', notes: 'n'.repeat(200) };
    expect(t.apply(ev('status', T0 + S, { status: big })).states).toHaveLength(1);
    const kept = t.get('acme', 'd1')!.status;
    expect(kept).toEqual({ oversized: true, bytes: JSON.stringify(big).length, sha256: expect.any(String) });
    // The same payload again is no change; another one of the same size is.
    expect(t.apply(ev('status', T0 + 2 * S, { status: big })).states).toEqual([]);
    expect(t.apply(ev('status', T0 + 3 * S, { status: { ...big, fw: '1.2' } })).states).toHaveLength(1);
    expect(hits).toEqual(Array(3).fill('PRESENCE_MAX_STATUS_BYTES'));
  });

  it('follows at most PRESENCE_MAX_GATEWAYS gateways without connections, and every gateway with some', () => {
    const { t, hits } = bounded();
    t.heartbeat(hb('gw-1'), T0);
    t.heartbeat(hb('gw-2'), T0);
    t.heartbeat(hb('gw-3'), T0); // a third name, no connection: not followed
    expect(t.gatewayCount).toBe(2);
    expect(hits).toEqual(['PRESENCE_MAX_GATEWAYS']);
    // A gateway with a connection is followed whatever the count: its devices depend on it.
    t.apply(ev('connected', T0, { gateway: 'gw-4' }));
    t.heartbeat(hb('gw-4'), T0);
    expect(t.gatewayCount).toBe(3);
    // Silent ones are forgotten once their timeout passes, which makes room again.
    t.tick(T0 + (HEARTBEAT_MISSES + 1) * DEFAULT_INTERVAL_MS);
    t.heartbeat(hb('gw-3'), T0 + (HEARTBEAT_MISSES + 1) * DEFAULT_INTERVAL_MS);
    expect(hits).toEqual(['PRESENCE_MAX_GATEWAYS']);
  });

  it('holds restored states to its limits', () => {
    const { t, hits } = bounded();
    const connections = Array.from({ length: 5 }, (_, i) => ({
      gateway: 'gw-a',
      clientId: i === 4 ? 'x'.repeat(500) : `d1:${i}`,
      since: iso(T0 + i),
    }));
    t.restore([
      {
        tenant: 'acme',
        deviceId: 'd1',
        online: true,
        reason: 'connected',
        since: iso(T0),
        connections,
        status: 's'.repeat(500),
      },
    ]);
    const state = t.get('acme', 'd1')!;
    expect(state.connections.map((c) => c.clientId.slice(0, 8))).toEqual(['d1:2', 'd1:3', '#sha256:']);
    expect(state.status).toMatchObject({ oversized: true });
    expect(new Set(hits)).toEqual(
      new Set(['PRESENCE_MAX_CONNECTIONS', 'PRESENCE_MAX_CLIENT_ID_BYTES', 'PRESENCE_MAX_STATUS_BYTES']),
    );
  });

  it('never lets a state grow past presenceStateMaxBytes, whatever the events', () => {
    const { t } = bounded();
    // The worst there is: control characters (six bytes each as JSON), the longest ids, a full status.
    const nasty = (i: number) => `${i}${'\u0001'.repeat(limits.maxClientIdBytes - 2)}`;
    const device = { tenant: 't'.repeat(32), deviceId: 'd'.repeat(64), gateway: 'g'.repeat(32) };
    for (let i = 0; i < 10; i++) t.apply(ev('connected', T0 + i, { ...device, clientId: nasty(i) }));
    const status = '\u0002'.repeat(Math.floor((limits.maxStatusBytes - 2) / 6));
    t.apply(ev('status', T0 + 20, { ...device, status }));
    const state = t.get(device.tenant, device.deviceId)!;
    expect(state.connections).toHaveLength(limits.maxConnections);
    expect(state.status).toBe(status); // kept as it is: it fits
    expect(Buffer.byteLength(JSON.stringify(state))).toBeLessThanOrEqual(presenceStateMaxBytes(limits));
  });
});
