import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TELEMETRY_STREAM, telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { mosquittoPub } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * Which MQTT versions the gateway serves, with the Eclipse Mosquitto client (a third-party
 * implementation): 3.1 and 3.1.1 are served; MQTT 5 is refused at CONNECT, cleanly, with a reason
 * the client prints, rather than accepted and misread.
 */

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let device: ProvisionedDevice;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, { LIVE_VIEW: 'false' }));
  device = await provision(nc, 'versions-1', 'acme');
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

const stored = async () => (await (await jetstreamManager(nc)).streams.info(TELEMETRY_STREAM)).state.messages;

it('stores what MQTT 3.1 and 3.1.1 clients publish', async () => {
  for (const version of ['mqttv31', 'mqttv311']) {
    await mosquittoPub(
      gateway.ports.mqtt,
      device,
      telemetryTopic(device.id),
      '{"metrics":{"temperature":21.5}}',
      1,
      version,
    );
  }
  expect(await stored()).toBe(2);
});

it('refuses an MQTT 5 client at CONNECT, and says why', async () => {
  const before = await stored();
  const refused = mosquittoPub(
    gateway.ports.mqtt,
    device,
    telemetryTopic(device.id),
    '{"metrics":{"temperature":21.5}}',
    1,
    'mqttv5',
  );
  await expect(refused).rejects.toMatchObject({ stderr: expect.stringMatching(/protocol version/i) });
  expect(await stored()).toBe(before);
});
