import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type CanonicalEvent, TELEMETRY_STREAM } from '../../contract/index.js';
import { DeviceRegistry } from '../../gateway/registry/device-registry.js';
import { curl } from '../kit/curl.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, type Started, startScript } from '../kit/processes.js';
import { readStream } from '../kit/streams.js';

/**
 * HTTP ingest with GATEWAY_WORKERS=2, run as production runs it (gateway/main.ts): the workers share
 * HTTP_INGEST_PORT through node:cluster as they share the MQTT ports, and the primary's /metrics sums
 * their requests.
 */

let nats: NatsServer;
let nc: NatsConnection;
let gw: Started;
let env: Record<string, string>;
let secret: string;

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}\n${gw.output().stdout.slice(-4_000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The workers' pids, from the primary's log. */
function workerPids(): number[] {
  return gw
    .output()
    .stdout.split('\n')
    .filter((l) => l.includes('"msg":"worker started"'))
    .map((l) => (JSON.parse(l) as { workerPid: number }).workerPid);
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  ({ secret } = await (await DeviceRegistry.open(nc)).add({ id: 'wk-http-1', tenant: 'acme' }));
  env = {
    NATS_URL: nats.url,
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: String(await freePort()),
    HTTP_PORT: String(await freePort()),
    HTTP_INGEST_PORT: String(await freePort()),
    BIND_HOST: '127.0.0.1',
    GATEWAY_WORKERS: '2',
    SHUTDOWN_GRACE_MS: '3000',
    LOG_LEVEL: 'info',
  };
  gw = startScript('gateway/main.ts', [], env);
  await until(
    () =>
      fetch(`http://127.0.0.1:${env.HTTP_PORT}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      ),
    'the gateway to be ready',
  );
}, 120_000);

afterAll(async () => {
  for (const pid of workerPids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  gw?.kill();
  await nc?.close();
  await nats?.dispose();
});

it('serves HTTP_INGEST_PORT from the workers, and stores each post once', async () => {
  const requests = 12;
  const ts = Date.now() - 1_000;
  // One curl each: a new connection each, which the primary hands to the workers in turn.
  const answers = await Promise.all(
    Array.from({ length: requests }, (_, seq) =>
      curl([
        '-u',
        `wk-http-1:${secret}`,
        '-H',
        'content-type: application/json',
        '--data-binary',
        JSON.stringify({ seq, ts, metrics: { temperature: seq } }),
        `http://127.0.0.1:${env.HTTP_INGEST_PORT}/v1/devices/wk-http-1/telemetry`,
      ]).then((a) => a[0]!),
    ),
  );
  expect(answers.map((a) => a.status)).toEqual(Array(requests).fill(200));
  const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).map((e) => e.data.seq);
  expect(events.sort((a, b) => a! - b!)).toEqual(Array.from({ length: requests }, (_, i) => i));

  const text = await (await fetch(`http://127.0.0.1:${env.HTTP_PORT}/metrics`)).text();
  const served = [...text.matchAll(/^gateway_http_ingest_requests_total\{[^}]*status="200"[^}]*\} (\S+)$/gm)];
  expect(served.reduce((n, m) => n + Number(m[1]), 0)).toBe(requests);
});
