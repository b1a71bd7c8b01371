import { connect as tcpConnect } from 'node:net';
import { generate } from 'mqtt-packet';
import { RawSession } from '../../kit/raw-mqtt.js';

/**
 * A hostile device, in its own process so that its work does not slow the clients being measured.
 * It keeps `IN_FLIGHT` QoS 1 publishes of one shape outstanding (a new one at each PUBACK), and
 * reconnects whenever it is cut off. Every second it prints
 * `{"sent":…,"acked":…,"connections":…,"refused":…}`.
 *
 * Shapes (the ways found to make one message cost the gateway far more than a reading):
 * - batch-amplify: `[1,1,…]`, 65 KB of array elements, each of them invalid
 * - big-batches: batches of `readings` small valid readings
 * - garbage: 64 KB that is not JSON
 * - metric-names: batches of 100 readings, each naming a metric never used before
 * - long-client-ids: 25 connections whose client ids carry 50,000 characters, over and over
 * - connections: one device opening connection after connection with new client ids
 * - idle-sockets: 2,000 TCP connections that never send a CONNECT, reopened as they are closed
 * - pingreq: PINGREQ as fast as the socket takes them, reconnecting when cut off
 *
 * Usage: node --import tsx hostile.ts <shape> <mqttPort> <deviceId> <secret> [readings]
 */
const [shape, port, deviceId, secret, readingsArg] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string | undefined,
];
const IN_FLIGHT = 20;
const readings = Number(readingsArg ?? 1_000);
const topic = `devices/${deviceId}/telemetry`;
const stats = { sent: 0, acked: 0, connections: 0, refused: 0 };
let names = 0;

const payloads: Record<string, () => string> = {
  'batch-amplify': () => `[${Array(32_700).fill('1').join(',')}]`,
  'big-batches': () =>
    JSON.stringify(
      Array.from({ length: readings }, (_, i) => ({ ts: Date.now(), seq: i, metrics: { x: i } })),
    ),
  garbage: () => `{${'x'.repeat(65_000)}`,
  'metric-names': () =>
    JSON.stringify(Array.from({ length: 100 }, () => ({ metrics: { [`m${names++}`]: 1 } }))),
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const login = (clientId: string) => ({ clientId, username: deviceId, password: secret, keepalive: 60 });

/** The attacker's connection, counted; undefined (after a short pause) when it is refused. */
async function connectOrWait(): Promise<RawSession | undefined> {
  const session = await RawSession.open(Number(port), login(`${deviceId}:hostile`)).catch(() => undefined);
  if (session === undefined) {
    stats.refused++;
    await sleep(100);
  } else stats.connections++;
  return session;
}

/** Publishes the shape with IN_FLIGHT outstanding until the connection is cut; then again. */
async function publishLoop(make: () => string): Promise<void> {
  const fixed = shape === 'metric-names' ? undefined : make();
  for (;;) {
    const session = await connectOrWait();
    if (session === undefined) continue;
    let pid = 0;
    const lane = async () => {
      while (!session.socket.destroyed) {
        pid = (pid % 65_535) + 1;
        stats.sent++;
        await session.publish(topic, fixed ?? make(), pid, false, 30_000).then(
          () => void stats.acked++,
          () => session.socket.destroy(),
        );
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    await sleep(100);
  }
}

/** Connection after connection, each with a client id of its own, each left open. */
async function connectLoop(clientId: (i: number) => string, parallel: number): Promise<void> {
  let i = 0;
  const lane = async () => {
    for (;;) {
      const session = await RawSession.open(Number(port), login(clientId(i++))).catch(() => undefined);
      if (session === undefined) stats.refused++;
      else stats.connections++;
      await sleep(20);
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
}

/** Sockets that say nothing, kept at `count`: what an unauthenticated peer can make the gateway hold. */
function idleSockets(count: number): void {
  const open = () => {
    const socket = tcpConnect({ port: Number(port), host: '127.0.0.1' });
    socket.on('connect', () => void stats.connections++);
    socket.on('error', () => {});
    socket.on('close', () => {
      stats.refused++;
      setTimeout(open, 10);
    });
  };
  for (let i = 0; i < count; i++) open();
}

/** Control packets outside any publish rate, as fast as the socket takes them. */
async function pingLoop(): Promise<void> {
  const ping = Buffer.concat(Array(1_000).fill(generate({ cmd: 'pingreq' })));
  for (;;) {
    const session = await connectOrWait();
    if (session === undefined) continue;
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (!session.socket.destroyed) {
          stats.sent += 1_000;
          if (!session.socket.write(ping)) return void session.socket.once('drain', pump);
        }
      };
      void session.closed.then(resolve);
      pump();
    });
    await sleep(100);
  }
}

setInterval(() => console.log(JSON.stringify(stats)), 1_000);
if (shape === 'long-client-ids')
  void connectLoop((i) => `${deviceId}:${String(i % 25).padStart(50_000, 'x')}`, 25);
else if (shape === 'connections') void connectLoop((i) => `${deviceId}:c${i}`, 4);
else if (shape === 'idle-sockets') idleSockets(2_000);
else if (shape === 'pingreq') void pingLoop();
else if (payloads[shape] !== undefined) void publishLoop(payloads[shape]);
else throw new Error(`unknown shape '${shape}'`);
