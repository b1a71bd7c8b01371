import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../gateway/gateway.js';
import { startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { connectPacket, rawConnect } from '../kit/raw-mqtt.js';

/**
 * The keepalive policy against clients that ask for none (keepalive 0), for far more than the
 * maximum, or for less than the minimum: raw sockets, mqtt.js and Eclipse Paho (Debian's
 * python3-paho-mqtt 1.6.1, which never pings with keepalive 0). The gateway applies the bound and
 * closes the connection after 1.5 × that much silence [MQTT-3.1.2-24].
 */

const MIN_S = 2;
const MAX_S = 3;
/** Timers and scheduling on a shared machine: how late a close may come and still be on time. */
const SLACK_MS = 1_500;
/** Debian's interpreter: the pyenv python3 on PATH has no paho. */
const PYTHON = '/usr/bin/python3';

let nats: NatsServer;
let gateway: Gateway;

const limitCount = async (limit: string) =>
  (await gateway.metrics.registry.getSingleMetric('gateway_limit_reached_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

/** Connects with a raw CONNECT and then says nothing; ms from CONNACK to the gateway closing, or -1. */
function silentFor(keepalive: number, clientId: string, waitMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let connackAt = 0;
    const timer = setTimeout(() => resolve(-1), waitMs);
    void rawConnect(
      gateway.ports.mqtt,
      connectPacket({ clientId, username: clientId, keepalive }),
      5_000,
      (s) => {
        connackAt = Date.now();
        s.once('close', () => {
          clearTimeout(timer);
          resolve(Date.now() - connackAt);
        });
        timer.unref();
        // Closed by the test at the end if the gateway never does.
        setTimeout(() => s.destroy(), waitMs + 100).unref();
      },
    ).then((outcome) => outcome !== 0 && reject(new Error(`CONNECT refused: ${outcome}`)));
  });
}

const PAHO_SILENT = `
import sys, time
import paho.mqtt.client as mqtt
port, client_id, keepalive, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = mqtt.Client(client_id=client_id, clean_session=True)
c.username_pw_set(client_id)
state = {}
c.on_connect = lambda c, u, f, rc: state.setdefault("connack", (rc, time.monotonic()))
c.on_disconnect = lambda c, u, rc: state.setdefault("closed", time.monotonic())
c.connect("127.0.0.1", port, keepalive=keepalive)
end = time.monotonic() + wait
while time.monotonic() < end and "closed" not in state:
    c.loop(timeout=0.1)
rc, at = state["connack"]
print(rc, -1 if "closed" not in state else int((state["closed"] - at) * 1000))
`;

/** A paho client that sends nothing after its CONNECT: CONNACK code and ms until the gateway closed it. */
async function pahoSilent(keepalive: number, clientId: string, waitMs: number): Promise<[number, number]> {
  const { stdout } = await promisify(execFile)(
    PYTHON,
    ['-c', PAHO_SILENT, String(gateway.ports.mqtt), clientId, String(keepalive), String(waitMs / 1000)],
    { timeout: waitMs + 10_000 },
  );
  const [rc, ms] = stdout.trim().split(' ').map(Number);
  return [rc!, ms!];
}

beforeAll(async () => {
  nats = await startNatsServer();
  ({ gateway } = await startGateway(nats.url, {
    AUTH_MODE: 'open',
    LIVE_VIEW: 'false',
    MIN_KEEPALIVE_SECONDS: String(MIN_S),
    MAX_KEEPALIVE_SECONDS: String(MAX_S),
  }));
});

afterAll(async () => {
  await gateway?.close();
  await nats?.dispose();
});

describe('MAX_KEEPALIVE_SECONDS', () => {
  it('applies the maximum to keepalive 0 and to more than it, from raw sockets, mqtt.js and paho', async () => {
    const deadline = 1.5 * MAX_S * 1000;
    const wait = deadline + 2 * SLACK_MS;
    const mqttJs = (async () => {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.mqtt}`, {
        clientId: 'ka-mqttjs',
        username: 'ka-mqttjs',
        keepalive: 0,
        reconnectPeriod: 0,
      });
      const started = Date.now();
      return new Promise<number>((resolve) => {
        const timer = setTimeout(() => {
          client.end(true);
          resolve(-1);
        }, wait);
        client.once('close', () => {
          clearTimeout(timer);
          resolve(Date.now() - started);
        });
      });
    })();
    const [zero, huge, js, paho] = await Promise.all([
      silentFor(0, 'ka-zero', wait),
      silentFor(65_535, 'ka-huge', wait),
      mqttJs,
      pahoSilent(0, 'ka-paho', wait),
    ]);
    expect(paho[0]).toBe(0);
    for (const [who, ms] of [
      ['raw keepalive 0', zero],
      ['raw keepalive 65535', huge],
      ['mqtt.js keepalive 0', js],
      ['paho keepalive 0', paho[1]],
    ] as const) {
      expect(ms, who).toBeGreaterThanOrEqual(deadline - 100);
      expect(ms, who).toBeLessThan(deadline + SLACK_MS);
    }
    expect(await limitCount('MAX_KEEPALIVE_SECONDS')).toBe(4);
  });

  it('leaves a client that keeps its keepalive alone', async () => {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.mqtt}`, {
      clientId: 'ka-pinging',
      username: 'ka-pinging',
      keepalive: MAX_S,
      reconnectPeriod: 0,
    });
    await new Promise((r) => setTimeout(r, 2 * MAX_S * 1000));
    expect(client.connected).toBe(true);
    await client.endAsync();
  });
});

describe('MIN_KEEPALIVE_SECONDS', () => {
  it('gives a client asking for less the minimum before closing it', async () => {
    const before = await limitCount('MIN_KEEPALIVE_SECONDS');
    const deadline = 1.5 * MIN_S * 1000;
    const ms = await silentFor(1, 'ka-short', deadline + 2 * SLACK_MS);
    // Not at 1.5 s, as keepalive 1 alone would have it, but at 1.5 × the minimum.
    expect(ms).toBeGreaterThanOrEqual(deadline - 100);
    expect(ms).toBeLessThan(deadline + SLACK_MS);
    expect((await limitCount('MIN_KEEPALIVE_SECONDS')) - before).toBe(1);
  });
});
