import type { NatsConnection } from '@nats-io/nats-core';
import mqtt from 'mqtt';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type CanonicalEvent, TELEMETRY_STREAM, telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';
import { makeTestCertificate, type TestCertificate } from '../kit/tls.js';

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let device: ProvisionedDevice;
let certificate: TestCertificate | undefined;
let cert: Buffer;

beforeAll(async () => {
  certificate = await makeTestCertificate();
  cert = certificate.cert;
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  device = await provision(nc, 'listen-1', 'acme');
  ({ gateway } = await startGateway(nats.url, {
    MQTTS_PORT: '0',
    TLS_CERT_FILE: certificate!.certFile,
    TLS_KEY_FILE: certificate!.keyFile,
  }));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
  await certificate?.dispose();
});

it.each([
  ['WebSocket', () => `ws://127.0.0.1:${gateway.ports.ws}`, 1],
  ['TLS', () => `mqtts://127.0.0.1:${gateway.ports.mqtts}`, 2],
])('accepts devices over %s', async (_name, url, seq) => {
  const client = await mqtt.connectAsync(url(), {
    clientId: device.id,
    username: device.id,
    password: device.secret,
    reconnectPeriod: 0,
    ca: cert,
    rejectUnauthorized: true,
  });
  await client.publishAsync(
    telemetryTopic(device.id),
    JSON.stringify({ seq, ts: Date.now(), metrics: { a: seq } }),
    { qos: 1 },
  );
  await client.endAsync();
  const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
  expect(events.some((e) => e.data.seq === seq && e.data.deviceId === device.id)).toBe(true);
});

it('refuses TLS clients that do not trust the certificate', async () => {
  await expect(
    mqtt.connectAsync(`mqtts://127.0.0.1:${gateway.ports.mqtts}`, {
      reconnectPeriod: 0,
      rejectUnauthorized: true,
      connectTimeout: 3_000,
    }),
  ).rejects.toThrow(/self.signed|certificate/i);
});
