import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import type { LiveMessage } from '../../gateway/live/live-feed.js';
import { natsClient, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * Several gateways on one NATS, each with devices of its own: every live view shows the whole fleet's
 * traffic, from the once-a-second summaries of all gateways (not from every event), a gateway with
 * LIVE_VIEW=false included (it serves no view, and still summarises for the others').
 */
const TOKEN = 'live-gateways-test-token-0123456789';

let nats: NatsServer;
let nc: NatsConnection;
const gateways: Gateway[] = [];
const clients: MqttClient[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  for (const liveView of ['true', 'true', 'false']) {
    const { gateway } = await startGateway(nats.url, {
      AUTH_MODE: 'registry',
      OPERATOR_TOKEN: TOKEN,
      LIVE_VIEW: liveView,
    });
    gateways.push(gateway);
  }
});

afterAll(async () => {
  for (const c of clients) await c.endAsync().catch(() => {});
  for (const g of gateways) await g.close();
  await nc?.close();
  await nats?.dispose();
});

async function snapshot(gateway: Gateway): Promise<LiveMessage> {
  const res = await fetch(`http://127.0.0.1:${gateway.ports.http}/live/snapshot`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as LiveMessage;
}

async function until(
  gateway: Gateway,
  check: (m: LiveMessage) => boolean,
  what: string,
): Promise<LiveMessage> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const message = await snapshot(gateway);
    if (check(message)) return message;
    if (Date.now() > deadline)
      throw new Error(`gateway ${gateway.id}'s view never showed ${what}: ${JSON.stringify(message)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('live view across gateways', () => {
  it('shows every gateway the traffic of all of them', async () => {
    const names = ['north', 'south', 'dark'];
    for (const [i, gateway] of gateways.entries()) {
      const device = await provision(nc, `${names[i]}-1`, i === 1 ? 'beta' : 'acme', { type: 'thermometer' });
      const client = await connectDevice(gateway.ports.mqtt, device);
      clients.push(client);
      for (let seq = 1; seq <= i + 2; seq++) {
        await client.publishAsync(
          telemetryTopic(device.id),
          JSON.stringify({ ts: Date.now(), seq, metrics: { temperature: 20 + i + seq / 10 } }),
          { qos: 1 },
        );
      }
    }
    // One rejected payload, on the second gateway.
    await clients[1]!.publishAsync(telemetryTopic('south-1'), 'not json', { qos: 1 });

    // 2 + 3 + 4 events stored across the three gateways, one dead letter.
    const everything = (m: LiveMessage) =>
      m.totals.events === 9 && m.totals.deadletters === 1 && (m.readings?.length ?? 0) === 3;
    for (const gateway of gateways.slice(0, 2)) {
      const m = await until(gateway, everything, 'the three gateways’ events');
      expect(m.readings!.map((r) => r.key).sort()).toEqual(['acme.dark-1', 'acme.north-1', 'beta.south-1']);
      const south = m.readings!.find((r) => r.deviceId === 'south-1')!;
      expect(south).toMatchObject({ tenant: 'beta', type: 'thermometer' });
      expect(south.metrics[0]).toEqual(['temperature', 21.3, 'degC']);
      expect(m.deadletters).toEqual([
        expect.objectContaining({
          reason: 'PAYLOAD_NOT_JSON',
          count: 1,
          last: expect.objectContaining({ deviceId: 'south-1' }),
        }),
      ]);
      expect(m.tenants!.map((t) => [t.tenant, t.events, t.deadletters])).toEqual([
        ['acme', 6, 0],
        ['beta', 3, 1],
      ]);
    }
    // Each gateway counts the devices it heard from; the views add them up.
    await until(gateways[0]!, (m) => m.devices.reporting === 3, 'three devices reporting');

    // LIVE_VIEW=false: no page, no data routes.
    const dark = await fetch(`http://127.0.0.1:${gateways[2]!.ports.http}/live/snapshot`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(dark.status).toBe(404);
  }, 30_000);
});
