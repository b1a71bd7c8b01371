import { readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aedes, type Client } from 'aedes';
import mqttPacket, { generate } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AedesClientInternals,
  markIngested,
  skipIngested,
  writeAcksInOneWrite,
} from '../../../gateway/broker/aedes-internals.js';
import { connectPacket } from '../../kit/raw-mqtt.js';

/**
 * gateway/broker/aedes-internals.ts (and gateway/limits/control-rate.ts, outgoing-bytes.ts) reach into
 * aedes' and mqtt-packet's internals. Both are pinned to exact versions; this fails when the pin,
 * the installed copy or one of the members used changes, and says what to re-check.
 */
const PINNED = { aedes: '1.2.0', 'mqtt-packet': '9.0.2' } as const;

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const json = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const RECHECK = (what: string) =>
  `${what} changed: re-check gateway/broker/aedes-internals.ts (countCompletionsWhilePaused, limitFrameSizes, ` +
  'pausable, sentDisconnect), gateway/limits/control-rate.ts, gateway/limits/outgoing-bytes.ts and ' +
  'gateway/sessions/session-store.ts (aedes.clients), writeAcksInOneWrite (aedes lib/write.js), skipIngested (lib/handlers/publish.js) against ' +
  'the new aedes/mqtt-packet source, then update the pins and this test';

describe('aedes and mqtt-packet pins', () => {
  it.each(Object.entries(PINNED))(
    '%s is pinned to exactly %s in package.json, the lock and node_modules',
    (name, version) => {
      const pkg = json(join(root, 'package.json'));
      const lock = json(join(root, 'package-lock.json'));
      expect(pkg.dependencies[name], RECHECK(`the ${name} range in package.json`)).toBe(version);
      expect(lock.packages[''].dependencies[name], RECHECK(`the ${name} range in package-lock.json`)).toBe(
        version,
      );
      expect(lock.packages[`node_modules/${name}`].version, RECHECK(`the locked ${name}`)).toBe(version);
      expect(
        json(join(root, 'node_modules', name, 'package.json')).version,
        RECHECK(`the installed ${name}`),
      ).toBe(version);
    },
  );

  it('aedes parses with the pinned mqtt-packet, not a copy of its own', () => {
    const ours = createRequire(join(root, 'package.json')).resolve('mqtt-packet');
    const aedes = createRequire(join(root, 'node_modules/aedes/package.json')).resolve('mqtt-packet');
    expect(realpathSync(aedes), RECHECK('the mqtt-packet aedes resolves')).toBe(realpathSync(ours));
  });
});

describe('PUBACKs in one write (writeAcksInOneWrite)', () => {
  it("aedes writes every packet through mqtt-packet's writeToStream, looked up at each write", () => {
    const write = readFileSync(join(root, 'node_modules/aedes/lib/write.js'), 'utf8');
    expect(write, RECHECK('aedes lib/write.js')).toContain("import mqtt from 'mqtt-packet'");
    expect(write, RECHECK('aedes lib/write.js')).toContain('mqtt.writeToStream(packet, client.conn)');
  });

  it('writes the bytes mqtt-packet would, in one write, and leaves every other packet to mqtt-packet', () => {
    writeAcksInOneWrite();
    const writes: Buffer[] = [];
    const sink = { write: (b: Buffer) => writes.push(Buffer.from(b)) > 0 } as unknown as Parameters<
      typeof mqttPacket.writeToStream
    >[1];
    for (const messageId of [0, 1, 2, 255, 256, 4660, 65_534, 65_535]) {
      writes.length = 0;
      expect(mqttPacket.writeToStream({ cmd: 'puback', messageId }, sink)).toBe(true);
      expect(writes).toHaveLength(1);
      expect(writes[0]).toEqual(generate({ cmd: 'puback', messageId }));
    }
    writes.length = 0;
    mqttPacket.writeToStream({ cmd: 'pingresp' }, sink);
    expect(Buffer.concat(writes)).toEqual(generate({ cmd: 'pingresp' }));
  });
});

describe('publishes the ingest took skip aedes routing (skipIngested)', () => {
  it('aedes hands an acknowledged PUBLISH to client.broker.publish, looked up at each publish', () => {
    const handler = readFileSync(join(root, 'node_modules/aedes/lib/handlers/publish.js'), 'utf8');
    const handsOver = handler.split('client.broker.publish(packet, client, done)').length - 1;
    expect(handsOver, RECHECK('aedes lib/handlers/publish.js (QoS 0 and 1)')).toBe(2);
  });

  it('acknowledges both, and routes to subscribers only the publish not marked', async () => {
    const broker = new Aedes({
      authorizePublish: (_client, packet, done) => {
        if (packet.topic === 'pin/ingested') markIngested(packet);
        done(null);
      },
    });
    await broker.listen();
    skipIngested(broker);
    const routed: string[] = [];
    broker.subscribe(
      'pin/#',
      (packet, cb) => {
        routed.push(packet.topic);
        cb();
      },
      () => {},
    );
    const server = createServer((socket) => broker.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const socket = connect({ port: (server.address() as { port: number }).port, host: '127.0.0.1' });
    const received: Buffer[] = [];
    socket.on('data', (b: Buffer) => received.push(b));
    socket.write(connectPacket({ clientId: 'pin-skip' }));
    for (const [topic, messageId] of [
      ['pin/ingested', 1],
      ['pin/routed', 2],
    ] as const)
      socket.write(
        generate({ cmd: 'publish', topic, payload: 'x', qos: 1, messageId, retain: false, dup: false }),
      );
    const pubacks = () => Buffer.concat(received).subarray(4); // after the CONNACK
    while (pubacks().length < 8) await new Promise((r) => setTimeout(r, 2));
    expect(pubacks()).toEqual(Buffer.from([0x40, 2, 0, 1, 0x40, 2, 0, 2]));
    // aedes routes one client's publishes in the order they came: had the marked one been routed,
    // it would be first.
    while (routed.length === 0) await new Promise((r) => setTimeout(r, 2));
    expect(routed).toEqual(['pin/routed']);
    socket.destroy();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});

describe('aedes client internals, on a real client over a real socket', () => {
  let aedes: Aedes;
  let server: Server;
  let port: number;
  const accepted: AedesClientInternals[] = [];

  beforeAll(async () => {
    aedes = new Aedes();
    await aedes.listen();
    server = createServer((socket) => accepted.push(aedes.handle(socket) as AedesClientInternals));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** A socket and the aedes client for it, before anything was sent. */
  async function open(): Promise<{ socket: Socket; client: AedesClientInternals }> {
    const before = accepted.length;
    const socket = connect({ port, host: '127.0.0.1' });
    socket.on('data', () => {});
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    while (accepted.length === before) await new Promise((r) => setTimeout(r, 2));
    return { socket, client: accepted[accepted.length - 1]! };
  }

  async function connected(clientId: string): Promise<{ socket: Socket; client: AedesClientInternals }> {
    const { socket, client } = await open();
    const ready = new Promise<void>((resolve) => {
      const onReady = (c: Client) => {
        if (c !== client) return;
        aedes.off('clientReady', onReady);
        resolve();
      };
      aedes.on('clientReady', onReady);
    });
    socket.write(connectPacket({ clientId }));
    await ready;
    return { socket, client };
  }

  const member = (_client: object, name: string) => RECHECK(`aedes Client member '${name}'`);

  it('has every member the patches use, of the expected type, as soon as it is handled', async () => {
    const { socket, client } = await open();
    const parser = client._parser as unknown as Record<string, unknown> | undefined;
    expect(typeof parser, member(client, '_parser')).toBe('object');
    expect(typeof parser?._parseLength, RECHECK("mqtt-packet Parser member '_parseLength'")).toBe('function');
    expect(typeof parser?._emitError, RECHECK("mqtt-packet Parser member '_emitError'")).toBe('function');
    expect(typeof parser?.packet, RECHECK("mqtt-packet Parser member 'packet'")).toBe('object');
    expect(typeof parser?.on, RECHECK("mqtt-packet Parser member 'on'")).toBe('function');
    expect(typeof client._nextBatch, member(client, '_nextBatch')).toBe('function');
    expect(typeof client._parsingBatch, member(client, '_parsingBatch')).toBe('number');
    expect(typeof client.pause, member(client, 'pause')).toBe('function');
    expect(typeof client.resume, member(client, 'resume')).toBe('function');
    expect(client._disconnected, member(client, '_disconnected')).toBe(false);
    const delivering = client as unknown as Record<string, unknown>;
    for (const name of ['deliverQoS', 'deliver0', '_handleDrainTimeout'])
      expect(typeof delivering[name], member(client, name)).toBe('function');
    socket.destroy();
  });

  it("reads a frame's header through the parser's own _parseLength, with packet.cmd and packet.length set", async () => {
    const { socket, client } = await open();
    const parser = client._parser!;
    const original = parser._parseLength;
    const seen: { cmd: string; length: number }[] = [];
    parser._parseLength = function (this: typeof parser) {
      const ok = original.call(this);
      if (ok) seen.push({ cmd: this.packet.cmd, length: this.packet.length });
      return ok;
    };
    const packet = connectPacket({ clientId: 'pin-header' });
    socket.write(packet);
    while (seen.length === 0) await new Promise((r) => setTimeout(r, 2));
    expect(seen[0], RECHECK("mqtt-packet Parser '_parseLength' / 'packet'")).toEqual({
      cmd: 'connect',
      length: packet.length - 2, // fixed header: type byte and one length byte
    });
    socket.destroy();
  });

  it("closes the connection with a clientError when _parseLength returns the parser's _emitError", async () => {
    const { socket, client } = await open();
    const parser = client._parser!;
    parser._parseLength = function (this: typeof parser) {
      return this._emitError(new Error('refused by the pin test'));
    };
    const errored = new Promise<string>((resolve) =>
      aedes.once('connectionError', (_c, err) => resolve(err.message)),
    );
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write(connectPacket({ clientId: 'pin-error' }));
    expect(await errored, RECHECK("mqtt-packet Parser '_emitError'")).toBe('refused by the pin test');
    await closed;
  });

  it("keeps each connected client in aedes.clients by its id (the session store's view, gateway/sessions/), until it is gone", async () => {
    const { socket, client } = await connected('pin-clients');
    const clients = (aedes as unknown as { clients: Record<string, unknown> }).clients;
    expect(clients['pin-clients'], RECHECK("aedes member 'clients'")).toBe(client);
    const gone = new Promise<void>((resolve) => aedes.once('clientDisconnect', () => resolve()));
    socket.destroy();
    await gone;
    expect(clients['pin-clients'], RECHECK("aedes member 'clients'")).toBeUndefined();
  });

  it('sets _paused around authentication and pause()/resume() toggle it, resume through this._nextBatch', async () => {
    const { socket, client } = await connected('pin-pause');
    expect(client._paused, member(client, '_paused')).toBe(false);
    expect(client._parsingBatch, member(client, '_parsingBatch')).toBe(0);
    const next = client._nextBatch;
    let calls = 0;
    client._nextBatch = (err) => {
      calls++;
      next(err);
    };
    client.pause();
    expect(client._paused, member(client, 'pause')).toBe(true);
    client.resume();
    expect(client._paused, member(client, 'resume')).toBe(false);
    expect(calls, RECHECK("aedes Client 'resume' calling this._nextBatch")).toBe(1);
    socket.destroy();
  });

  it("hands each packet's handler the client's current _nextBatch, so that a wrapper installed later is called", async () => {
    const { socket, client } = await connected('pin-next-batch');
    const next = client._nextBatch;
    let calls = 0;
    client._nextBatch = (err) => {
      calls++;
      next(err);
    };
    const pong = new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.write(generate({ cmd: 'pingreq' }));
    await pong;
    expect(calls, RECHECK("aedes reading client._nextBatch per packet ('enqueue' in lib/client.js)")).toBe(1);
    expect(client._parsingBatch, member(client, '_parsingBatch')).toBe(0);
    socket.destroy();
  });

  it('acknowledges a QoS 1 PUBLISH with the 4 bytes of a PUBACK', async () => {
    writeAcksInOneWrite();
    const { socket } = await connected('pin-puback');
    const received: Buffer[] = [];
    socket.on('data', (b: Buffer) => received.push(b));
    socket.write(
      generate({
        cmd: 'publish',
        topic: 'pin/puback',
        payload: 'x',
        qos: 1,
        messageId: 4660,
        retain: false,
        dup: false,
      }),
    );
    // The CONNACK may come in the same read: the PUBACK is what ends the bytes.
    const last4 = () => Buffer.concat(received).subarray(-4);
    while (last4()[0] !== 0x40) await new Promise((r) => setTimeout(r, 2));
    expect(last4()).toEqual(Buffer.from([0x40, 0x02, 0x12, 0x34]));
    socket.destroy();
  });

  it('sets _disconnected on a DISCONNECT, and not when the socket just drops', async () => {
    const clean = await connected('pin-clean');
    const gone = (client: Client) =>
      new Promise<void>((resolve) => {
        const onGone = (c: Client) => {
          if (c !== client) return;
          aedes.off('clientDisconnect', onGone);
          resolve();
        };
        aedes.on('clientDisconnect', onGone);
      });
    const cleanGone = gone(clean.client);
    clean.socket.write(generate({ cmd: 'disconnect' }));
    await cleanGone;
    expect(clean.client._disconnected, member(clean.client, '_disconnected')).toBe(true);

    const dropped = await connected('pin-dropped');
    const droppedGone = gone(dropped.client);
    dropped.socket.destroy();
    await droppedGone;
    expect(dropped.client._disconnected, member(dropped.client, '_disconnected')).toBe(false);
  });
});
