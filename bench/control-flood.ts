import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { generate } from 'mqtt-packet';
import { telemetryTopic } from '../contract/topics.js';
import { startNatsServer } from '../test/kit/nats-server.js';
import { connectPacket } from '../test/kit/raw-mqtt.js';
import { processCpuSeconds } from './cpu.js';
import { type GatewayProcess, startGatewayProcess } from './gateway-process.js';
import { quantile } from './stats.js';

/**
 * `npm run bench:control-flood`: what one connection looping PINGREQ, or SUBSCRIBE + UNSUBSCRIBE,
 * costs the gateway (its own process, CPU from /proc) and the other devices (publish→PUBACK of one
 * device publishing QoS 1 every 50 ms), with MAX_CONTROL_PACKETS_PER_SEC off and at its default,
 * in the same run. One flooding socket on loopback for `--seconds` each.
 */
const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } });
const SECONDS = Number(values.seconds);
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROBE_INTERVAL_MS = 50;

interface Line {
  limit: string;
  flood: string;
  answersPerSec: number;
  gatewayCpuPct: number | undefined;
  probeP50Ms: number;
  probeP99Ms: number;
  floodClosed: boolean;
}

/** publish→PUBACK times of a well-behaved device for `ms`. */
async function probe(client: mqtt.MqttClient, id: string, ms: number): Promise<number[]> {
  const times: number[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const t0 = performance.now();
    await client.publishAsync(telemetryTopic(id), JSON.stringify({ ts: Date.now(), metrics: { a: 1 } }), {
      qos: 1,
    });
    times.push(performance.now() - t0);
    await sleep(PROBE_INTERVAL_MS);
  }
  return times.sort((a, b) => a - b);
}

/** One socket writing `chunk` as fast as the gateway reads it; answers counted in bytes. */
async function flood(gw: GatewayProcess, chunk: Buffer | undefined, answerBytes: number, ms: number) {
  if (chunk === undefined) return { answers: 0, closed: false };
  const socket = connect(gw.mqttPort, '127.0.0.1');
  socket.on('error', () => {});
  let bytes = 0;
  let closed = false;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  socket.on('close', () => (closed = true));
  await new Promise((r) => socket.once('connect', r));
  socket.write(connectPacket({ clientId: 'flood', username: 'flood' }));
  await sleep(200);
  const start = bytes;
  const end = Date.now() + ms;
  while (Date.now() < end && !closed) {
    if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r).once('close', r));
  }
  socket.destroy();
  return { answers: (bytes - start) / answerBytes, closed };
}

const filter = 'devices/flood/commands/#';
const FLOODS: [string, Buffer | undefined, number][] = [
  ['none', undefined, 1],
  ['PINGREQ', Buffer.concat(Array.from({ length: 100 }, () => generate({ cmd: 'pingreq' }))), 2],
  [
    'SUBSCRIBE+UNSUBSCRIBE',
    Buffer.concat(
      Array.from({ length: 50 }, (_, i) =>
        Buffer.concat([
          generate({ cmd: 'subscribe', messageId: 2 * i + 1, subscriptions: [{ topic: filter, qos: 1 }] }),
          generate({ cmd: 'unsubscribe', messageId: 2 * i + 2, unsubscriptions: [filter] }),
        ]),
      ),
    ),
    // SUBACK 5 bytes, UNSUBACK 4: per packet answered, on average
    4.5,
  ],
];

const nats = await startNatsServer();
const lines: Line[] = [];
try {
  for (const limit of ['0', '10']) {
    const gw = await startGatewayProcess({
      cwd: REPO_ROOT,
      natsUrl: nats.url,
      env: { AUTH_MODE: 'open', LIVE_VIEW: 'false', MAX_CONTROL_PACKETS_PER_SEC: limit },
    });
    const probeClient = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.mqttPort}`, {
      clientId: 'probe',
      username: 'probe',
      reconnectPeriod: 0,
    });
    try {
      for (const [name, chunk, answerBytes] of FLOODS) {
        const cpu0 = processCpuSeconds(gw.pid);
        const t0 = performance.now();
        const [times, result] = await Promise.all([
          probe(probeClient, 'probe', SECONDS * 1000),
          flood(gw, chunk, answerBytes, SECONDS * 1000),
        ]);
        const secs = (performance.now() - t0) / 1000;
        const cpu1 = processCpuSeconds(gw.pid);
        lines.push({
          limit: limit === '0' ? 'off' : `${limit}/s`,
          flood: name,
          answersPerSec: Math.round(result.answers / secs),
          gatewayCpuPct:
            cpu0 === undefined || cpu1 === undefined ? undefined : Math.round(((cpu1 - cpu0) / secs) * 100),
          probeP50Ms: Number(quantile(times, 0.5).toFixed(1)),
          probeP99Ms: Number(quantile(times, 0.99).toFixed(1)),
          floodClosed: result.closed,
        });
        console.log(JSON.stringify(lines.at(-1)));
        await sleep(1_000);
      }
    } finally {
      await probeClient.endAsync(true);
      await gw.stop();
    }
  }
} finally {
  await nats.dispose();
}
console.log('\n| limit | flood | answered/s | gateway CPU | probe p50 | probe p99 | flood closed |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const l of lines)
  console.log(
    `| ${l.limit} | ${l.flood} | ${l.answersPerSec} | ${l.gatewayCpuPct ?? '?'} % | ${l.probeP50Ms} ms | ${l.probeP99Ms} ms | ${l.floodClosed ? 'yes' : 'no'} |`,
  );
