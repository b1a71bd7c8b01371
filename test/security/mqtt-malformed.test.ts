import { createConnection, type Socket } from 'node:net';
import type { NatsConnection } from '@nats-io/nats-core';
import type { MqttClient } from 'mqtt';
import { generate, type IConnectPacket, type Packet, parser } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  DEADLETTER_STREAM,
  type DeadLetter,
  TELEMETRY_STREAM,
  telemetrySubject,
  telemetryTopic,
} from '../../contract/index.js';
import type { GatewayConfig } from '../../gateway/config.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

/**
 * Hand-made MQTT bytes over raw TCP: valid packets from mqtt-packet, then corrupted. Each attack must
 * end with the broker closing the connection, and leave the broker as it was: a device connected
 * before keeps publishing QoS 1 and getting PUBACKs, its events are stored, a new device connects,
 * and nothing the attacker sent reaches TELEMETRY (nor DEADLETTER: it is refused at the protocol).
 */

/** Generous: the machine's two cores are shared with other suites. */
const CLOSE_DEADLINE_MS = 10_000;
/** aedes' default connect timeout: a connection that never completes its CONNECT is dropped then. */
const AEDES_CONNECT_TIMEOUT_MS = 30_000;
const ATTACK_PAYLOAD = JSON.stringify({ metrics: { attack: 1 } });

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let config: GatewayConfig;
let attacker: ProvisionedDevice;
let legit: ProvisionedDevice;
let newcomer: ProvisionedDevice;
let legitClient: MqttClient;
let legitSeq = 0;
let attempt = 0;
const sockets: Socket[] = [];

interface RawConnection {
  socket: Socket;
  /** What the broker sent, as mqtt-packet parses it. */
  packets: Packet[];
  closed: Promise<void>;
}

function openRaw(): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port: gateway.ports.mqtt });
    sockets.push(socket);
    const packets: Packet[] = [];
    const incoming = parser({ protocolVersion: 4 });
    incoming.on('packet', (p) => packets.push(p));
    incoming.on('error', () => {});
    socket.on('data', (d) => incoming.parse(d));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => {
      // ECONNRESET / EPIPE when the broker closes while we still write: expected here.
      socket.on('error', () => {});
      resolve({ socket, packets, closed });
    });
    socket.once('error', reject);
  });
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function until(check: () => boolean, what: string, ms = CLOSE_DEADLINE_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function connectPacket(device: ProvisionedDevice, over: Partial<IConnectPacket> = {}): IConnectPacket {
  return {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    clientId: `${device.id}:${++attempt}`,
    username: device.id,
    password: Buffer.from(device.secret),
    ...over,
  };
}

/** A raw connection whose CONNECT the broker accepted (CONNACK 0). */
async function connectedRaw(over: Partial<IConnectPacket> = {}): Promise<RawConnection> {
  const conn = await openRaw();
  conn.socket.write(generate(connectPacket(attacker, over)));
  await until(() => conn.packets.length > 0, 'CONNACK');
  expect(conn.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
  return conn;
}

/** Offset of the variable header: after the fixed header's first byte and its length varint. */
function bodyOffset(packet: Buffer): number {
  let i = 1;
  while (packet[i]! & 0x80) i++;
  return i + 1;
}

function varint(value: number): Buffer {
  const out: number[] = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return Buffer.from(out);
}

/** The packet with its fixed header rewritten to announce `length` bytes, whatever the body holds. */
function withLength(packet: Buffer, length: number): Buffer {
  return Buffer.concat([packet.subarray(0, 1), varint(length), packet.subarray(bodyOffset(packet))]);
}

function patched(packet: Buffer, offsetInBody: number, bytes: number[]): Buffer {
  const copy = Buffer.from(packet);
  copy.set(bytes, bodyOffset(copy) + offsetInBody);
  return copy;
}

// Offsets in a 3.1.1 CONNECT's variable header: protocol name (2 + 4 bytes), level, flags, keepalive.
const PROTOCOL_NAME_AT = 2;
const PROTOCOL_LEVEL_AT = 6;
const CONNECT_FLAGS_AT = 7;

const attackerConnect = () => generate(connectPacket(attacker));
const attackPublish = (topic: string, qos: 0 | 1 = 1) =>
  generate({
    cmd: 'publish',
    topic,
    payload: Buffer.from(ATTACK_PAYLOAD),
    qos,
    messageId: qos > 0 ? 42 : undefined,
    retain: false,
    dup: false,
  } as Packet);
const ownTelemetry = () => telemetryTopic(attacker.id);

interface Attack {
  name: string;
  /** Sent on a connection whose CONNECT was accepted; otherwise as the first bytes of a new one. */
  afterConnect?: boolean;
  /** Written in order. */
  bytes: () => Buffer[];
  /** Half-close our side afterwards, as a client that gives up mid-packet does. */
  end?: boolean;
  keepalive?: number;
  /** The CONNACK return code the broker may send before it closes (a refused CONNECT). */
  connack?: number;
}

const ATTACKS: Attack[] = [
  // Garbage.
  { name: 'an HTTP request', bytes: () => [Buffer.from('GET / HTTP/1.1\r\nHost: gateway\r\n\r\n')] },
  {
    name: 'a TLS ClientHello on the plain port',
    bytes: () => [
      Buffer.concat([
        Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        Buffer.alloc(32, 7),
      ]),
    ],
  },
  { name: '64 bytes of 0xFF', bytes: () => [Buffer.alloc(64, 0xff)] },
  { name: '64 zero bytes (reserved packet type 0)', bytes: () => [Buffer.alloc(64, 0)] },
  { name: 'zero bytes after CONNECT', afterConnect: true, bytes: () => [Buffer.alloc(16, 0)] },
  {
    name: 'a CONNACK from the client (a server-only packet)',
    afterConnect: true,
    bytes: () => [Buffer.from([0x20, 0x02, 0, 0])],
  },
  {
    name: 'AUTH (MQTT 5 only) on a 3.1.1 connection',
    afterConnect: true,
    bytes: () => [Buffer.from([0xf0, 0x00])],
  },
  // Remaining length.
  {
    name: 'CONNECT with a 5-byte remaining length',
    bytes: () => [Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])],
  },
  {
    name: 'PUBLISH with a 5-byte remaining length',
    afterConnect: true,
    bytes: () => [Buffer.from([0x32, 0xff, 0xff, 0xff, 0xff, 0x7f])],
  },
  {
    name: 'CONNECT announcing MAX_PACKET_BYTES + 1 (header only)',
    bytes: () => [Buffer.concat([Buffer.from([0x10]), varint(config.MAX_PACKET_BYTES + 1)])],
  },
  {
    name: 'PUBLISH announcing MAX_PACKET_BYTES + 1 (header only)',
    afterConnect: true,
    bytes: () => [Buffer.concat([Buffer.from([0x32]), varint(config.MAX_PACKET_BYTES + 1)])],
  },
  {
    name: 'PUBLISH of 2 MiB, sent in full',
    afterConnect: true,
    bytes: () => [
      generate({
        cmd: 'publish',
        topic: ownTelemetry(),
        payload: Buffer.alloc(2 * 1024 * 1024, 0x20),
        qos: 1,
        messageId: 7,
        retain: false,
        dup: false,
      }),
    ],
  },
  // Truncated.
  {
    name: 'CONNECT cut in half, then FIN',
    bytes: () => {
      const connect = attackerConnect();
      return [connect.subarray(0, connect.length >> 1)];
    },
    end: true,
  },
  {
    name: 'CONNECT whose length ends inside its password',
    bytes: () => {
      const connect = attackerConnect();
      const body = connect.length - bodyOffset(connect);
      return [withLength(connect.subarray(0, connect.length - 10), body - 10)];
    },
  },
  {
    name: 'PUBLISH whose length ends inside its topic',
    afterConnect: true,
    bytes: () => [Buffer.from([0x32, 0x01, 0x00])],
  },
  {
    name: 'PUBLISH cut in half, then silence past the keepalive',
    afterConnect: true,
    // The broker waits 1.5 keepalives for a packet [MQTT-3.1.2-24]; half a packet does not count.
    keepalive: 1,
    bytes: () => {
      const publish = attackPublish(ownTelemetry());
      return [publish.subarray(0, publish.length >> 1)];
    },
  },
  // CONNECT itself wrong.
  {
    name: 'CONNECT with protocol level 6',
    bytes: () => [patched(attackerConnect(), PROTOCOL_LEVEL_AT, [6])],
  },
  {
    name: 'CONNECT with protocol level 0',
    bytes: () => [patched(attackerConnect(), PROTOCOL_LEVEL_AT, [0])],
  },
  {
    name: 'CONNECT with protocol level 5 (MQTT 5 is not served: CONNACK 1)',
    bytes: () => [generate(connectPacket(attacker, { protocolVersion: 5 }))],
    connack: 1,
  },
  {
    name: 'CONNECT with protocol name MQTX',
    bytes: () => [patched(attackerConnect(), PROTOCOL_NAME_AT, [0x4d, 0x51, 0x54, 0x58])],
  },
  {
    name: 'CONNECT with protocol name mqtt',
    bytes: () => [patched(attackerConnect(), PROTOCOL_NAME_AT, [0x6d, 0x71, 0x74, 0x74])],
  },
  {
    name: 'CONNECT with the reserved flag set [MQTT-3.1.2-3]',
    bytes: () => {
      const connect = attackerConnect();
      return [patched(connect, CONNECT_FLAGS_AT, [connect[bodyOffset(connect) + CONNECT_FLAGS_AT]! | 0x01])];
    },
  },
  {
    name: 'CONNECT with fixed-header flags set [MQTT-2.2.2-2]',
    bytes: () => {
      const connect = attackerConnect();
      connect[0] = 0x1f;
      return [connect];
    },
  },
  { name: 'a second CONNECT [MQTT-3.1.0-2]', afterConnect: true, bytes: () => [attackerConnect()] },
  // Out of order.
  { name: 'PUBLISH before CONNECT [MQTT-3.1.0-1]', bytes: () => [attackPublish(ownTelemetry())] },
  {
    name: 'SUBSCRIBE before CONNECT',
    bytes: () => [
      generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] } as Packet),
    ],
  },
  // Topics no PUBLISH may carry.
  {
    name: 'PUBLISH to devices/{own}/+',
    afterConnect: true,
    bytes: () => [attackPublish(`devices/${attacker.id}/+`)],
  },
  {
    name: 'PUBLISH to devices/{own}/#',
    afterConnect: true,
    bytes: () => [attackPublish(`devices/${attacker.id}/#`)],
  },
  { name: 'PUBLISH to #', afterConnect: true, bytes: () => [attackPublish('#')] },
  {
    name: 'PUBLISH to devices/{own}/telemetry<NUL> [MQTT-1.5.3-2]',
    afterConnect: true,
    bytes: () => [attackPublish(`${ownTelemetry()}\u0000`)],
  },
  {
    name: 'PUBLISH to devices/{own}<NUL>/telemetry',
    afterConnect: true,
    bytes: () => [attackPublish(`devices/${attacker.id}\u0000/telemetry`)],
  },
  {
    name: 'PUBLISH at QoS 3 [MQTT-3.3.1-4]',
    afterConnect: true,
    bytes: () => {
      const publish = attackPublish(ownTelemetry());
      publish[0] = 0x36;
      return [publish];
    },
  },
];

async function legitPublishes(): Promise<void> {
  legitSeq++;
  expect(legitClient.connected).toBe(true);
  await within(
    legitClient.publishAsync(
      telemetryTopic(legit.id),
      JSON.stringify({ ts: Date.now(), seq: legitSeq, metrics: { ok: legitSeq } }),
      { qos: 1 },
    ),
    CLOSE_DEADLINE_MS,
    'no PUBACK for the legitimate device',
  );
}

/** The broker as it was: the old device is acked and stored, a new one connects, no trace of the attacker. */
async function expectUnharmed(): Promise<void> {
  await legitPublishes();
  const events = await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM);
  expect(
    events.filter((e) => e.subject === telemetrySubject(legit.tenant, legit.id)).map((e) => e.data.seq),
  ).toEqual(Array.from({ length: legitSeq }, (_, i) => i + 1));
  expect(events.filter((e) => e.data.deviceId === attacker.id || e.data.metrics.attack)).toEqual([]);
  const letters = await readStream<DeadLetter>(nc, DEADLETTER_STREAM);
  expect(letters.filter((l) => l.data.deviceId === attacker.id)).toEqual([]);
  const fresh = await connectDevice(gateway.ports.mqtt, newcomer, { clientId: `${newcomer.id}:${legitSeq}` });
  await fresh.endAsync();
}

// Half a CONNECT and then nothing, not even a FIN: only aedes' connect timeout ends it (the gateway sets
// none of its own). Opened before everything else and checked last, so that waiting it out overlaps the
// other attacks instead of adding 30 s to the file.
let slowloris: RawConnection;
let slowlorisOpenedAt: number;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  attacker = await provision(nc, 'attacker-1');
  legit = await provision(nc, 'legit-1');
  newcomer = await provision(nc, 'newcomer-1');
  // Keepalive 1 (below the default minimum) keeps the silence test short.
  ({ gateway, config } = await startGateway(nats.url, { MIN_KEEPALIVE_SECONDS: '1' }));
  legitClient = await connectDevice(gateway.ports.mqtt, legit);
  await legitPublishes();

  slowloris = await openRaw();
  slowlorisOpenedAt = Date.now();
  const connect = attackerConnect();
  slowloris.socket.write(connect.subarray(0, connect.length - 5));
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await legitClient?.endAsync(true);
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

describe('malformed MQTT closes the connection and leaves the broker unharmed', () => {
  it.each(ATTACKS)('$name', async ({ afterConnect, bytes, end, keepalive, connack }) => {
    const conn = afterConnect
      ? await connectedRaw(keepalive === undefined ? {} : { keepalive })
      : await openRaw();
    const before = conn.packets.length;
    for (const chunk of bytes()) conn.socket.write(chunk);
    if (end) conn.socket.end();
    await within(conn.closed, CLOSE_DEADLINE_MS, 'the broker did not close the connection');

    const answers = conn.packets.slice(before);
    if (connack === undefined) expect(answers).toEqual([]);
    else expect(answers).toMatchObject([{ cmd: 'connack', returnCode: connack }]);
    await expectUnharmed();
  });

  it('CONNECT and PUBLISH pipelined in one write still work (the refusals are not over-eager)', async () => {
    const conn = await openRaw();
    const topic = telemetryTopic(newcomer.id);
    const reading = JSON.stringify({ ts: Date.now(), seq: 1, metrics: { pipelined: 1 } });
    conn.socket.write(
      Buffer.concat([
        generate(connectPacket(newcomer)),
        generate({
          cmd: 'publish',
          topic,
          payload: Buffer.from(reading),
          qos: 1,
          messageId: 9,
          retain: false,
          dup: false,
        }),
      ]),
    );
    await until(() => conn.packets.some((p) => p.cmd === 'puback'), 'PUBACK');
    expect(conn.packets.map((p) => p.cmd)).toEqual(['connack', 'puback']);
    const events = (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM)).filter(
      (e) => e.data.deviceId === newcomer.id,
    );
    expect(events.map((e) => e.data.metrics)).toEqual([{ pipelined: { value: 1, unit: '' } }]);
    conn.socket.end(generate({ cmd: 'disconnect' }));
    await within(conn.closed, CLOSE_DEADLINE_MS, 'no close after DISCONNECT');
  });

  it(
    'a CONNECT that never completes is dropped at the connect timeout',
    async () => {
      const left = slowlorisOpenedAt + AEDES_CONNECT_TIMEOUT_MS + CLOSE_DEADLINE_MS - Date.now();
      await within(slowloris.closed, Math.max(left, 1), 'the half-sent CONNECT was not dropped');
      expect(slowloris.packets).toEqual([]);
      await legitPublishes();
    },
    AEDES_CONNECT_TIMEOUT_MS + 2 * CLOSE_DEADLINE_MS,
  );
});
