import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GATEWAY_TAKEOVER_SUBJECT } from '../../contract/subjects.js';
import { startTakeover, type Takeover } from '../../gateway/takeover.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { log } from './broker/fixtures.js';

/** Takeover notices between two gateways' adapters, over a real nats-server. */
let nats: NatsServer;
const conns: NatsConnection[] = [];
const takeovers: Takeover[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  for (const t of takeovers) t.close();
  for (const nc of conns) await nc.close();
  await nats?.dispose();
});

async function gateway(id: string, has: { connections?: string[]; sessions?: string[] } = {}) {
  const nc = await natsClient(nats.url);
  conns.push(nc);
  const closed: [string, string][] = [];
  const dropped: string[] = [];
  const counted: string[] = [];
  const takeover = startTakeover({
    nc,
    gatewayId: id,
    closeConnection: (clientId, by) => {
      closed.push([clientId, by]);
      return has.connections?.includes(clientId) ?? false;
    },
    dropSession: (clientId) => {
      dropped.push(clientId);
      return has.sessions?.includes(clientId) ?? false;
    },
    takenOver: (what) => counted.push(what),
    log,
  });
  takeovers.push(takeover);
  await nc.flush();
  return { nc, takeover, closed, dropped, counted };
}

describe('takeover notices', () => {
  it('tell every other gateway, never the one announcing', async () => {
    const a = await gateway('gw-a', { connections: ['dev-1'], sessions: ['dev-1'] });
    const b = await gateway('gw-b');
    b.takeover.announce('dev-1');
    await b.nc.flush();
    await expect.poll(() => a.closed).toEqual([['dev-1', 'gw-b']]);
    expect(a.dropped).toEqual(['dev-1']);
    expect(a.counted).toEqual(['connection', 'session']);
    expect(b.closed).toEqual([]);
  });

  it('count only what there was to take over', async () => {
    const a = await gateway('gw-c');
    const b = await gateway('gw-d');
    b.takeover.announce('dev-2');
    await expect.poll(() => a.closed.length).toBe(1);
    expect(a.counted).toEqual([]);
  });

  it('ignore what is not a notice', async () => {
    const a = await gateway('gw-e');
    const nc = await natsClient(nats.url);
    conns.push(nc);
    nc.publish(GATEWAY_TAKEOVER_SUBJECT, 'not json');
    nc.publish(GATEWAY_TAKEOVER_SUBJECT, JSON.stringify({ clientId: 'dev-3' }));
    await nc.flush();
    const b = await gateway('gw-f');
    b.takeover.announce('dev-4'); // arrives after the two above
    await expect.poll(() => a.closed).toEqual([['dev-4', 'gw-f']]);
  });

  it('are not announced while NATS is away (one sent on reconnecting would be stale), nor once closed', async () => {
    const a = await gateway('gw-g');
    const b = await gateway('gw-h');
    const seen = (nc: NatsConnection, type: string) =>
      (async () => {
        for await (const s of nc.status()) if (s.type === type) return;
      })();
    const away = seen(b.nc, 'disconnect');
    await nats.stop();
    await away;
    b.takeover.announce('dev-5');
    const back = Promise.all([seen(a.nc, 'reconnect'), seen(b.nc, 'reconnect')]);
    await nats.restart();
    await back;
    // The takeover's own status loop may hear of the reconnect a little after this test does: until
    // it has, a notice is (rightly) not sent. Announce until one arrives.
    await expect
      .poll(
        () => {
          b.takeover.announce('dev-6');
          return a.closed.length > 0;
        },
        { timeout: 5_000 },
      )
      .toBe(true);
    // Only fresh notices: never dev-5, announced while NATS was away.
    expect(new Set(a.closed.map(([id, by]) => `${id}@${by}`))).toEqual(new Set(['dev-6@gw-h']));
    await b.nc.close();
    expect(() => b.takeover.announce('dev-7')).not.toThrow();
  }, 30_000);
});
