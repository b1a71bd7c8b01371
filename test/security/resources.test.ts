import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { telemetryTopic } from '../../contract/index.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, type Started, startScript } from '../kit/processes.js';

/**
 * The gateway's memory, measured on a gateway in its own process (`node --import tsx gateway/main.ts`)
 * by pid: with 10k idle connections opened from another child process, and while NATS is down
 * with devices publishing QoS 1 and QoS 0. Figures are printed; the README quotes them.
 */

let nats: NatsServer;
const children: Started[] = [];
const clients: MqttClient[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? Number.NaN : Number(line.split(' ').at(-1));
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (
    !(await Promise.resolve()
      .then(check)
      .catch(() => false))
  ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

interface GatewayProcess {
  pid: number;
  mqtt: number;
  http: number;
  started: Started;
}

async function startGatewayProcess(env: Record<string, string> = {}): Promise<GatewayProcess> {
  const [mqttPort, ws, http] = [await freePort(), await freePort(), await freePort()];
  const started = startScript('gateway/main.ts', [], {
    NATS_URL: nats.url,
    MQTT_PORT: String(mqttPort),
    MQTT_WS_PORT: String(ws),
    HTTP_PORT: String(http),
    BIND_HOST: '127.0.0.1',
    AUTH_MODE: 'open',
    LOG_LEVEL: 'warn',
    LIVE_VIEW: 'false',
    SHUTDOWN_GRACE_MS: '1000',
    // 10,000 idle connections and the warm-up ones on one listener: above the default bound.
    MAX_CONNECTIONS: '12000',
    // One process, whose pid is the whole gateway: what one gateway (one worker) holds.
    GATEWAY_WORKERS: '1',
    ...env,
  });
  children.push(started);
  await until(
    async () => (await fetch(`http://127.0.0.1:${http}/readyz`)).status === 200,
    `the gateway to be ready: ${started.output().stderr}`,
  );
  return { pid: started.child.pid!, mqtt: mqttPort, http, started };
}

/** Opens `count` idle connections from a child process; resolves once all are answered. */
async function idleClients(port: number, count: number, prefix: string): Promise<Started> {
  const child = startScript('test/security/clients/idle.ts', [String(port), String(count), prefix]);
  children.push(child);
  await until(() => child.output().stdout.includes('"connected"'), `${count} idle connections`, 90_000);
  const result = JSON.parse(child.output().stdout.trim().split('\n').at(-1)!) as {
    connected: number;
    failed: number;
    failures: unknown[];
  };
  expect(result).toMatchObject({ connected: count, failed: 0 });
  return child;
}

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  for (const c of children) c.kill();
  await Promise.all(children.map((c) => c.finished));
  await nats?.dispose();
});

describe('10k idle connections', () => {
  it('cost the gateway a bounded, measured number of bytes each', async () => {
    const gw = await startGatewayProcess();
    // Warm-up connections first, so that code loaded and compiled on first use is in the baseline.
    const warm = await idleClients(gw.mqtt, 200, 'warm-');
    await sleep(2_000);
    const rssBefore = await rssBytes(gw.pid);
    const heapBefore = await metric(gw.http, 'gateway_nodejs_heap_size_used_bytes');

    const N = 10_000;
    const started = performance.now();
    const idle = await idleClients(gw.mqtt, N, 'idle-');
    const seconds = (performance.now() - started) / 1000;
    await until(async () => (await metric(gw.http, 'gateway_mqtt_connections')) === N + 200, 'all connected');
    await sleep(3_000); // presence events published, buffers settled
    const rssAfter = await rssBytes(gw.pid);
    const heapAfter = await metric(gw.http, 'gateway_nodejs_heap_size_used_bytes');
    const perConnection = (rssAfter - rssBefore) / N;
    console.log(
      `[idle] ${N} connections opened in ${seconds.toFixed(1)} s; gateway RSS ` +
        `${(rssBefore / MiB).toFixed(1)} → ${(rssAfter / MiB).toFixed(1)} MiB, ` +
        `${Math.round(perConnection)} bytes/connection (heap ${Math.round((heapAfter - heapBefore) / N)} bytes/connection)`,
    );
    expect((await fetch(`http://127.0.0.1:${gw.http}/healthz`)).status).toBe(200);
    // Generous: the point is that the figure is measured and bounded, not a tight budget.
    expect(perConnection).toBeLessThan(64 * 1024);
    idle.kill();
    warm.kill();
    gw.started.kill();
  }, 120_000);
});

describe('NATS down while devices keep publishing', () => {
  it('holds a bounded amount: memory plateaus, and the gateway carries on when NATS is back', async () => {
    const gw = await startGatewayProcess({ QOS0_MAX_IN_FLIGHT: '2000' });
    const payload = JSON.stringify({ metrics: { temperature: 21.5, humidity: 40, note: 'x'.repeat(150) } });
    let publishing = true;
    const loops: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      const qos = i < 10 ? 1 : 0;
      const id = `down-${qos}-${i}`;
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.mqtt}`, {
        clientId: id,
        username: id,
        reconnectPeriod: 0,
      });
      clients.push(client);
      // 50 a second each, under the default rate limit; QoS 1 is not awaited, as a device with a
      // large in-flight window would send.
      loops.push(
        (async () => {
          while (publishing && client.connected) {
            client.publish(telemetryTopic(id), payload, { qos }, () => {});
            await sleep(20);
          }
        })(),
      );
    }
    await sleep(3_000);
    const rssUp = await rssBytes(gw.pid);

    await nats.stop();
    const samples: number[] = [];
    const held: number[] = [];
    for (let s = 0; s < 16; s++) {
      await sleep(1_000);
      samples.push(await rssBytes(gw.pid));
      held.push(await metric(gw.http, 'gateway_jetstream_in_flight'));
    }
    const firstHalf = Math.max(...samples.slice(0, 8));
    const secondHalf = Math.max(...samples.slice(8));
    console.log(
      `[nats down] 10 devices QoS 1 + 10 QoS 0 at 50/s each; RSS with NATS up ${(rssUp / MiB).toFixed(1)} MiB, ` +
        `each second of 16 s down: ${samples.map((b) => (b / MiB).toFixed(0)).join(' ')} MiB; ` +
        `publishes held: ${held.join(' ')}`,
    );
    expect(Math.max(...samples) - rssUp).toBeLessThan(150 * MiB);
    expect(secondHalf - firstHalf).toBeLessThan(40 * MiB);
    // Held publishes stop growing: a QoS 1 connection is not read past what waits for its ack.
    expect(Math.max(...held.slice(8))).toBeLessThan(Math.max(...held.slice(0, 8)) + 2_000);

    await nats.restart();
    await until(
      async () => (await fetch(`http://127.0.0.1:${gw.http}/readyz`)).status === 200,
      'readyz',
      30_000,
    );
    const after = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.mqtt}`, {
      clientId: 'after-outage',
      username: 'after-outage',
      reconnectPeriod: 0,
    });
    clients.push(after);
    await after.publishAsync(telemetryTopic('after-outage'), payload, { qos: 1 });
    publishing = false;
    await Promise.all(loops);
    gw.started.kill();
  }, 120_000);
});
