import type { NatsConnection } from '@nats-io/nats-core';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  GATEWAY_HEARTBEAT_SUBJECTS,
  type GatewayHeartbeat,
  TELEMETRY_STREAM,
  telemetryTopic,
} from '../../contract/index.js';
import { DeviceRegistry } from '../../gateway/registry/device-registry.js';
import { natsClient, type ProvisionedDevice } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, type Started, startScript } from '../kit/processes.js';
import { readStream } from '../kit/streams.js';
import { makeTestCertificate, type TestCertificate } from '../kit/tls.js';

/**
 * GATEWAY_WORKERS=2, run as production runs it (gateway/main.ts, a process): devices on one port
 * spread over both workers, one /readyz and summed /metrics, a SIGKILLed worker restarted with
 * nothing acknowledged lost, and SIGTERM draining every worker.
 */
const DEVICES = 12;
const SHUTDOWN_GRACE_MS = 5_000;
const TOKEN = 'workers-test-operator-token';

let nats: NatsServer;
let nc: NatsConnection;
let gw: Started;
let env: Record<string, string>;
let certificate: TestCertificate | undefined;
const devices: ProvisionedDevice[] = [];

const http = (path: string) => fetch(`http://127.0.0.1:${env.HTTP_PORT}${path}`);

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}\n${gw.output().stdout.slice(-4_000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const ready = () =>
  http('/readyz').then(
    (r) => r.status === 200,
    () => false,
  );

/** A metric from the primary's /metrics: the sum over its label sets, or those containing `label`. */
async function metric(name: string, label = ''): Promise<number> {
  const text = await (await http('/metrics')).text();
  let total = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm')))
    if ((m[1] ?? '').includes(label)) total += Number(m[2]);
  return total;
}

/** The primary's log lines with this message, parsed. */
function logged(msg: string): { worker: number; workerPid: number; restartInMs?: number }[] {
  return gw
    .output()
    .stdout.split('\n')
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l));
}

/** The pids of the workers the primary has started, in order, from its log. */
function workerPids(): number[] {
  return logged('worker started').map((l) => l.workerPid);
}

/**
 * Devices publishing QoS 1 readings with `seq` and `ts` (so a copy sent again after a reconnect is
 * the same event to JetStream) one at a time, each sent again until acknowledged. `acked` holds what
 * got a PUBACK: what the gateway promised is stored.
 */
class Fleet {
  readonly acked = new Set<string>();
  /** Each test's fleet counts from its own `seq`, so that its readings are told from earlier ones. */
  constructor(readonly firstSeq: number) {}
  reconnects = 0;
  private running = true;
  private readonly loops: Promise<void>[] = [];
  private readonly clients: MqttClient[] = [];

  async start(port: number): Promise<void> {
    for (const d of devices) {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
        clientId: d.id,
        username: d.id,
        password: d.secret,
        reconnectPeriod: 200,
        connectTimeout: 5_000,
      });
      client.on('reconnect', () => this.reconnects++);
      this.clients.push(client);
      this.loops.push(this.publishLoop(client, d.id));
    }
  }

  private async publishLoop(client: MqttClient, id: string): Promise<void> {
    for (let seq = this.firstSeq; this.running; seq++) {
      const payload = JSON.stringify({ seq, ts: new Date().toISOString(), metrics: { t: seq } });
      while (this.running) {
        try {
          await client.publishAsync(telemetryTopic(id), payload, { qos: 1 });
          this.acked.add(`${id}/${seq}`);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.clients.map((c) => c.endAsync(true)));
    // A publish pending on a client ended while offline may never settle: its loop is left behind.
    await Promise.race([Promise.all(this.loops), new Promise((r) => setTimeout(r, 2_000))]);
  }
}

/** `{device}/{seq}` of every event stored from `firstSeq` on. */
async function stored(firstSeq = 0): Promise<string[]> {
  const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
  return events.filter((e) => (e.data.seq ?? -1) >= firstSeq).map((e) => `${e.data.deviceId}/${e.data.seq}`);
}

function expectAllAckedStored(acked: Set<string>, keys: string[]): void {
  const have = new Set(keys);
  const lost = [...acked].filter((k) => !have.has(k));
  expect(lost).toEqual([]);
  // seq and ts name an event: a reading sent again after a reconnect is stored once.
  expect(keys.length).toBe(have.size);
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  const registry = await DeviceRegistry.open(nc);
  for (let i = 0; i < DEVICES; i++) {
    const id = `wk-${i}`;
    const { secret } = await registry.add({ id, tenant: 'acme' });
    devices.push({ id, tenant: 'acme', secret });
  }
  certificate = await makeTestCertificate();
  env = {
    NATS_URL: nats.url,
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: String(await freePort()),
    MQTTS_PORT: String(await freePort()),
    TLS_CERT_FILE: certificate.certFile,
    TLS_KEY_FILE: certificate.keyFile,
    HTTP_PORT: String(await freePort()),
    BIND_HOST: '127.0.0.1',
    GATEWAY_WORKERS: '2',
    GATEWAY_ID: 'wtest',
    HEARTBEAT_INTERVAL: '500ms',
    SHUTDOWN_GRACE_MS: String(SHUTDOWN_GRACE_MS),
    OPERATOR_TOKEN: TOKEN,
    LOG_LEVEL: 'info',
  };
  gw = startScript('gateway/main.ts', [], env);
  await until(ready, 'the gateway to be ready');
}, 120_000);

afterAll(async () => {
  // Workers first, by pid: a primary killed first would leave them to drain on their own.
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
  await certificate?.dispose();
});

describe('GATEWAY_WORKERS=2', () => {
  it('spreads devices on one port over both workers and stores all they send; one /readyz, summed /metrics', async () => {
    const beats = new Map<string, number>();
    const sub = nc.subscribe(GATEWAY_HEARTBEAT_SUBJECTS, {
      callback: (_err, msg) => {
        const beat = msg.json<GatewayHeartbeat>();
        beats.set(beat.gateway, beat.connections);
      },
    });
    const clients = await Promise.all(
      devices.map((d) =>
        mqtt.connectAsync(`mqtt://127.0.0.1:${env.MQTT_PORT}`, {
          clientId: d.id,
          username: d.id,
          password: d.secret,
          reconnectPeriod: 0,
        }),
      ),
    );
    for (const [i, c] of clients.entries())
      for (let seq = 0; seq < 5; seq++)
        await c.publishAsync(
          telemetryTopic(devices[i]!.id),
          JSON.stringify({
            seq,
            ts: new Date(Date.now() - 60_000 + seq * 1_000).toISOString(),
            metrics: { t: seq },
          }),
          { qos: 1 },
        );

    // Each worker is a gateway of its own on NATS: its own id, heartbeats and connections.
    await until(
      async () => [...beats.values()].reduce((a, b) => a + b, 0) === DEVICES && beats.size === 2,
      'heartbeats of both workers counting every device',
    );
    sub.unsubscribe();
    expect([...beats.keys()].sort()).toEqual(['wtest-w1', 'wtest-w2']);
    expect(Math.min(...beats.values())).toBeGreaterThan(0);

    expect(await metric('gateway_mqtt_connections')).toBe(DEVICES);
    expect(await metric('gateway_events_total', 'outcome="stored"')).toBe(DEVICES * 5);
    expect(await metric('gateway_mqtt_publishes_total', 'outcome="acked"')).toBe(DEVICES * 5);
    expect(await metric('gateway_workers', 'state="ready"')).toBe(2);
    expect(await metric('gateway_nats_connected')).toBe(1);
    // Every limit shows, from the workers, at 0; the HTTP ones are the primary's.
    expect(await metric('gateway_limit_reached_total', 'limit="MAX_CONNECTIONS"')).toBe(0);
    expect(await metric('gateway_limit_reached_total', 'limit="HTTP_MAX_CONNECTIONS"')).toBe(0);
    expect((await stored()).length).toBe(DEVICES * 5);

    const readyz = await http('/readyz');
    expect(readyz.status).toBe(200);
    expect(await readyz.json()).toEqual({ ready: true, missing: [] });
    expect((await http('/healthz')).status).toBe(200);
    // The live view is the primary's, fed from NATS as a single gateway's is.
    const snapshot = await http(`/live/snapshot?token=${TOKEN}`);
    expect(snapshot.status).toBe(200);
    expect(((await snapshot.json()) as { status: { gateway: string } }).status.gateway).toBe('wtest');

    await Promise.all(clients.map((c) => c.endAsync()));
  }, 60_000);

  it('shares the WebSocket and TLS ports too: a device on each is stored, whichever worker takes it', async () => {
    const urls = [
      `ws://127.0.0.1:${env.MQTT_WS_PORT}`,
      `ws://127.0.0.1:${env.MQTT_WS_PORT}`,
      `mqtts://127.0.0.1:${env.MQTTS_PORT}`,
      `mqtts://127.0.0.1:${env.MQTTS_PORT}`,
    ];
    for (const [i, url] of urls.entries()) {
      const d = devices[i]!;
      const client = await mqtt.connectAsync(url, {
        clientId: d.id,
        username: d.id,
        password: d.secret,
        reconnectPeriod: 0,
        ca: certificate!.cert,
        rejectUnauthorized: true,
      });
      const seq = 500_000 + i;
      await client.publishAsync(
        telemetryTopic(d.id),
        JSON.stringify({ seq, ts: new Date().toISOString(), metrics: { t: i } }),
        {
          qos: 1,
        },
      );
      await client.endAsync();
    }
    expect((await stored(500_000)).sort()).toEqual(
      urls.map((_, i) => `${devices[i]!.id}/${500_000 + i}`).sort(),
    );
  }, 60_000);

  it('restarts a SIGKILLed worker under load: its devices reconnect and every acknowledged reading is stored', async () => {
    const before = await stored();
    const fleet = new Fleet(1_000_000);
    await fleet.start(Number(env.MQTT_PORT));
    await until(async () => fleet.acked.size >= DEVICES * 10, 'the fleet to be acknowledged');

    const [victim] = workerPids();
    process.kill(victim!, 'SIGKILL');
    await until(async () => gw.output().stdout.includes('worker exited unasked'), 'the primary to notice');
    const notReady = (await (await http('/readyz')).json()) as { missing: string[] };
    expect(notReady.missing.some((m) => m.startsWith('worker 1 (wtest-w1)'))).toBe(true);

    await until(async () => workerPids().length === 3 && (await ready()), 'worker 1 restarted and ready');
    expect(gw.output().stdout).toContain('"gateway":"wtest-w3"');
    const ackedAtRestart = fleet.acked.size;
    await until(
      async () => fleet.acked.size >= ackedAtRestart + DEVICES * 5,
      'acknowledgements after the restart',
    );
    await fleet.stop();

    expect(fleet.reconnects).toBeGreaterThan(0);
    expect(await metric('gateway_worker_restarts_total')).toBe(1);
    // The killed worker's counters are kept: the sum never goes back below what was stored before.
    expect(await metric('gateway_events_total', 'outcome="stored"')).toBeGreaterThanOrEqual(before.length);
    expectAllAckedStored(fleet.acked, await stored(1_000_000));
  }, 120_000);

  it('starts a worker that keeps dying later each time: a crash loop does not spin', async () => {
    const restartsBefore = await metric('gateway_worker_restarts_total');
    const exitsBefore = logged('worker exited unasked: starting another').length;
    // Worker 2 killed three times over, each successor as soon as it is forked (never ready).
    for (let kill = 0; kill < 3; kill++) {
      const started = logged('worker started').filter((l) => l.worker === 2);
      process.kill(started.at(-1)!.workerPid, 'SIGKILL');
      await until(
        async () => logged('worker started').filter((l) => l.worker === 2).length > started.length,
        'worker 2 started again',
      );
    }
    const delays = logged('worker exited unasked: starting another')
      .slice(exitsBefore)
      .map((l) => l.restartInMs!);
    // 1 s doubling, with equal jitter (half to all of it).
    expect(delays).toHaveLength(3);
    expect(delays[0]).toBeGreaterThanOrEqual(500);
    expect(delays[1]).toBeGreaterThanOrEqual(1_000);
    expect(delays[2]).toBeGreaterThanOrEqual(2_000);
    expect(await metric('gateway_worker_restarts_total')).toBe(restartsBefore + 3);
    await until(ready, 'worker 2 ready again');
  }, 120_000);

  it('drains every worker on SIGTERM and exits 0 within the drain time, nothing acknowledged lost', async () => {
    const fleet = new Fleet(2_000_000);
    await fleet.start(Number(env.MQTT_PORT));
    await until(async () => fleet.acked.size >= DEVICES * 5, 'the fleet to be acknowledged');

    const signalled = Date.now();
    gw.kill('SIGTERM');
    const result = await gw.finished;
    const tookMs = Date.now() - signalled;
    await fleet.stop();

    expect(result.code).toBe(0);
    expect(tookMs).toBeLessThan(SHUTDOWN_GRACE_MS + 5_000);
    // Both workers and the primary.
    expect(result.stdout.match(/"msg":"gateway stopped"/g)?.length).toBe(3);
    expectAllAckedStored(fleet.acked, await stored(2_000_000));
  }, 60_000);
});
