import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEFAULT_TENANT } from '../../contract/ids.js';
import { type CanonicalEvent, TELEMETRY_STREAM } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { type CurlAnswer, curl } from '../kit/curl.js';
import { natsClient, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

/**
 * HTTP ingest in AUTH_MODE=open (no credentials: the path names the device) and at a device's rate
 * limit, which HTTP requests share with its MQTT publishes: slightly over, a request waits for its
 * token; a whole burst in debt, 429 with Retry-After; past MAX_IN_FLIGHT_PER_CLIENT requests at once,
 * 429 too.
 */

let nats: NatsServer;
let gateway: Gateway;

beforeAll(async () => {
  nats = await startNatsServer();
  ({ gateway } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    AUTH_MODE: 'open',
    HTTP_INGEST_PORT: '0',
    DEVICE_MAX_MSGS_PER_SEC: '1',
    DEVICE_MSGS_BURST: '2',
  }));
});

afterAll(async () => {
  await gateway?.close();
  await nats?.dispose();
});

const post = (id: string, body: string, port = gateway.ports.httpIngest) =>
  curl([
    '-H',
    'content-type: application/json',
    '--data-binary',
    body,
    `http://127.0.0.1:${port}/v1/devices/${id}/telemetry`,
  ]).then((a) => a[0]!);

it('takes a post without credentials in AUTH_MODE=open, as the device its path names', async () => {
  const answer = await post(
    'open-1',
    JSON.stringify({ seq: 1, ts: Date.now() - 100, metrics: { temperature: 20 } }),
  );
  expect(answer.status).toBe(200);
  expect(answer.body).toEqual({ stored: 1, duplicates: 0, rejected: [] });
  const nc = await natsClient(nats.url);
  const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).map((e) => e.data);
  await nc.close();
  expect(events).toEqual([expect.objectContaining({ deviceId: 'open-1', tenant: DEFAULT_TENANT, seq: 1 })]);
});

it('answers 429 with Retry-After to a device a whole burst over its rate; other devices pass', async () => {
  // 1 a second, 2 saved up: two go at once, two wait their token (debt up to the burst), the rest 429.
  const ts = Date.now() - 100;
  const answers: CurlAnswer[] = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      post('busy-1', `{"seq":${i},"ts":${ts},"metrics":{"temperature":${i}}}`),
    ),
  );
  const statuses = answers.map((a) => a.status).sort();
  expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  const refused = answers.find((a) => a.status === 429)!;
  expect(refused.body).toMatchObject({ code: 'RATE_LIMITED' });
  expect(refused.headers).toMatch(/retry-after: \d+/i);
  expect((await post('calm-1', '{"metrics":{"temperature":1}}')).status).toBe(200);
});

it('answers 429 to a device past MAX_IN_FLIGHT_PER_CLIENT requests at once', async () => {
  const { gateway: small } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    AUTH_MODE: 'open',
    HTTP_INGEST_PORT: '0',
    MAX_IN_FLIGHT_PER_CLIENT: '2',
    ACK_TIMEOUT_MS: '500',
    // Long enough that both requests are surely held together, however slowly curl starts.
    HTTP_INGEST_STORE_TIMEOUT_MS: '10000',
  });
  const port = small.ports.httpIngest;
  // A stopped (SIGSTOP) server keeps the two first requests waiting for their acknowledgements.
  const body = (seq: number) => JSON.stringify({ seq, ts: Date.now() - 100, metrics: { temperature: seq } });
  process.kill(nats.pid!, 'SIGSTOP');
  try {
    const held = [post('held-1', body(1), port), post('held-1', body(2), port)];
    const deadline = Date.now() + 5_000;
    for (;;) {
      const v = await small.metrics.registry.getSingleMetric('gateway_jetstream_in_flight')!.get();
      if ((v.values[0]?.value ?? 0) >= 2) break;
      if (Date.now() > deadline) throw new Error('the two requests were not held');
      await new Promise((r) => setTimeout(r, 20));
    }
    const third = await post('held-1', body(3), port);
    expect(third.status).toBe(429);
    expect(third.body).toMatchObject({ code: 'RATE_LIMITED' });
    held.push(post('other-1', body(4), port)); // another device is not held back by this one
    process.kill(nats.pid!, 'SIGCONT');
    // Stored once the server runs again, well within the store timeout.
    expect((await Promise.all(held)).map((a) => a.status)).toEqual([200, 200, 200]);
  } finally {
    process.kill(nats.pid!, 'SIGCONT');
    await small.close();
  }
});

it('answers a request still unconfirmed when the gateway shuts down 503 NOT_STORED', async () => {
  // SHUTDOWN_GRACE_MS (2 s in the kit) is shorter than the store timeout: the drain gives up first.
  const { gateway: closing } = await startGateway(nats.url, {
    LIVE_VIEW: 'false',
    AUTH_MODE: 'open',
    HTTP_INGEST_PORT: '0',
    ACK_TIMEOUT_MS: '500',
  });
  const body = JSON.stringify({ seq: 1, ts: Date.now() - 100, metrics: { temperature: 1 } });
  process.kill(nats.pid!, 'SIGSTOP');
  try {
    const held = post('bye-1', body, closing.ports.httpIngest);
    const deadline = Date.now() + 5_000;
    for (;;) {
      const v = await closing.metrics.registry.getSingleMetric('gateway_jetstream_in_flight')!.get();
      if ((v.values[0]?.value ?? 0) >= 1) break;
      if (Date.now() > deadline) throw new Error('the request was not held');
      await new Promise((r) => setTimeout(r, 20));
    }
    const closed = closing.close();
    const answer = await held;
    expect(answer.status).toBe(503);
    expect(answer.body).toMatchObject({ code: 'NOT_STORED', stored: 0, unconfirmed: [0] });
    process.kill(nats.pid!, 'SIGCONT');
    await closed;
  } finally {
    process.kill(nats.pid!, 'SIGCONT');
    await closing.close();
  }
});
