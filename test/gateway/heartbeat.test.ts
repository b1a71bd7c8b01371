import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { GatewayHeartbeat, gatewayHeartbeatSubject } from '../../contract/index.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const GATEWAY_ID = 'gw-hb';
const INTERVAL_MS = 100;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway | undefined;
let device: ProvisionedDevice;

/** Every heartbeat of GATEWAY_ID from now on, with the time it arrived. */
function listen(conn: NatsConnection) {
  const received: { hb: GatewayHeartbeat; atMs: number }[] = [];
  const sub = conn.subscribe(gatewayHeartbeatSubject(GATEWAY_ID), {
    callback: (err, msg) => {
      if (!err) received.push({ hb: GatewayHeartbeat.parse(msg.json()), atMs: Date.now() });
    },
  });
  return { received, stop: () => sub.unsubscribe() };
}

async function until(check: () => boolean, what: string, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  device = await provision(nc, 'hb-1', 'acme');
  ({ gateway } = await startGateway(nats.url, {
    GATEWAY_ID,
    HEARTBEAT_INTERVAL: `${INTERVAL_MS}ms`,
  }));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('gateway heartbeat', () => {
  it('is configured as a duration, 5s by default', () => {
    expect(loadConfig(GatewayConfigSchema, {}).HEARTBEAT_INTERVAL).toBe(5_000);
    expect(loadConfig(GatewayConfigSchema, { HEARTBEAT_INTERVAL: '1m' }).HEARTBEAT_INTERVAL).toBe(60_000);
    for (const bad of ['soon', '10ms'])
      expect(() => loadConfig(GatewayConfigSchema, { HEARTBEAT_INTERVAL: bad })).toThrow(
        /HEARTBEAT_INTERVAL/,
      );
  });

  it('beats every interval with its id and the number of open device connections', async () => {
    const { received, stop } = listen(nc);
    await until(() => received.length >= 2, 'heartbeats');
    expect(received[0]!.hb).toMatchObject({ gateway: GATEWAY_ID, intervalMs: INTERVAL_MS, connections: 0 });

    const client = await connectDevice(gateway!.ports.mqtt, device);
    await until(() => received.at(-1)!.hb.connections === 1, 'a heartbeat counting the device');
    await client.endAsync();
    await until(() => received.at(-1)!.hb.connections === 0, 'a heartbeat after the device left');
    stop();
    const gaps = received.slice(1).map((r, i) => r.atMs - received[i]!.atMs);
    expect(Math.max(...gaps)).toBeLessThan(INTERVAL_MS * 3);
  });

  it('skips beats while NATS is away instead of sending them late in a burst', async () => {
    await nats.stop();
    // Bounded real wait: several intervals during which the gateway must not buffer heartbeats.
    await new Promise((r) => setTimeout(r, INTERVAL_MS * 6));
    const restartedAt = Date.now();
    await nats.restart();
    const fresh = await natsClient(nats.url);
    try {
      const { received, stop } = listen(fresh);
      await until(() => received.length >= 3, 'heartbeats after the outage', 10_000);
      stop();
      for (const { hb } of received) expect(Date.parse(hb.at)).toBeGreaterThanOrEqual(restartedAt);
    } finally {
      await fresh.close();
    }
  });

  it('stops beating when the gateway closes', async () => {
    const fresh = await natsClient(nats.url);
    try {
      const { received, stop } = listen(fresh);
      await until(() => received.length >= 1, 'a heartbeat');
      await gateway!.close();
      gateway = undefined;
      const count = received.length;
      await new Promise((r) => setTimeout(r, INTERVAL_MS * 3));
      stop();
      expect(received.length).toBe(count);
    } finally {
      await fresh.close();
    }
  });
});
