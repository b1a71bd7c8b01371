import { connect } from 'node:net';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Gateway } from '../../gateway/gateway.js';
import { curl } from '../kit/curl.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { makeTestCertificate, type TestCertificate } from '../kit/tls.js';

/**
 * HTTPS on HTTP_INGEST_PORT (HTTP_INGEST_TLS, the MQTT TLS listener's certificate), with curl: the
 * secret no longer travels in clear, and a socket that never completes its handshake is closed at
 * HTTP_INGEST_READ_TIMEOUT_MS.
 */

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let device: ProvisionedDevice;
let certificate: TestCertificate;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  certificate = await makeTestCertificate();
  ({ gateway } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    MQTTS_PORT: '0',
    TLS_CERT_FILE: certificate.certFile,
    TLS_KEY_FILE: certificate.keyFile,
    HTTP_INGEST_PORT: '0',
    HTTP_INGEST_TLS: 'true',
    HTTP_INGEST_READ_TIMEOUT_MS: '1000',
  }));
  device = await provision(nc, 'https-1', 'acme');
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
  await certificate?.dispose();
});

const path = () => `127.0.0.1:${gateway.ports.httpIngest}/v1/devices/${device.id}/telemetry`;
const args = () => [
  '-u',
  `${device.id}:${device.secret}`,
  '-H',
  'content-type: application/json',
  '--data-binary',
  JSON.stringify({ seq: 1, ts: Date.now() - 100, metrics: { temperature: 20 } }),
];

it('stores a post over HTTPS', async () => {
  const [answer] = await curl([...args(), '--cacert', certificate.certFile, `https://${path()}`]);
  expect(answer!.status).toBe(200);
  expect(answer!.body).toEqual({ stored: 1, duplicates: 0, rejected: [] });
});

it('serves no plain HTTP on the port', async () => {
  await expect(curl([...args(), `http://${path()}`])).rejects.toThrow(/curl exited/);
});

it('closes a socket that never completes its handshake at HTTP_INGEST_READ_TIMEOUT_MS', async () => {
  const startedAt = Date.now();
  const socket = connect(gateway.ports.httpIngest!, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('still open after 5 s')), 5_000);
    socket.once('close', () => {
      clearTimeout(guard);
      resolve();
    });
    socket.on('error', () => {});
  });
  expect(Date.now() - startedAt).toBeGreaterThanOrEqual(900);
  const limits = await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get();
  expect(limits.values.find((v) => v.labels.limit === 'HTTP_INGEST_READ_TIMEOUT_MS')?.value).toBe(1);
});
