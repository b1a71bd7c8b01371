import { connect, connect as createConnection, type Socket } from 'node:net';
import mqttPacket, { generate } from 'mqtt-packet';

/**
 * MQTT from raw sockets, for the hostile-input tests that need thousands of connections: an mqtt.js
 * client costs the test process far more than the gateway spends on it.
 */
export interface RawConnect {
  clientId: string;
  username?: string;
  password?: string;
  keepalive?: number;
  /** CleanSession; false keeps a persistent session on the gateway. */
  clean?: boolean;
}

export function connectPacket({
  clientId,
  username,
  password,
  keepalive = 60,
  clean = true,
}: RawConnect): Buffer {
  return generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean,
    clientId,
    keepalive,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password: Buffer.from(password) }),
  });
}

/** What became of a CONNECT: the CONNACK return code, or the connection closed/failed/timed out first. */
export type RawOutcome = number | 'closed' | 'timeout' | `error ${string}`;

/**
 * Opens a socket, sends the CONNECT and waits for the CONNACK. With `keep`, an accepted socket is
 * handed to it and left open; otherwise the socket is destroyed once the outcome is known.
 */
export function rawConnect(
  port: number,
  packet: Buffer,
  timeoutMs = 20_000,
  keep?: (socket: Socket) => void,
): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let got = Buffer.alloc(0);
    let settled = false;
    const settle = (outcome: RawOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      if (outcome === 0 && keep) {
        // Keep draining so that nothing the broker writes can block it.
        socket.on('data', () => {});
        keep(socket);
      } else socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => settle('timeout'), timeoutMs);
    socket.once('connect', () => socket.write(packet));
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      // CONNACK: 0x20, remaining length 2, flags, return code.
      if (got.length >= 4) settle(got[0] === 0x20 ? got[3]! : 'error not a CONNACK');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => settle(`error ${err.code ?? err.message}`));
    socket.once('close', () => settle('closed'));
  });
}

/** Runs `task` over `items` with at most `concurrency` at a time; results in order. */
export async function pool<T, R>(items: readonly T[], concurrency: number, task: (item: T) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await task(items[i]!);
      }
    }),
  );
  return results;
}

/**
 * One MQTT connection from a raw socket, for tests that need exact bytes: a chosen packet id, the
 * DUP flag set by hand, a PUBLISH sent and the socket dropped before its PUBACK.
 */
export class RawSession {
  private readonly acks = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private readonly subacks = new Map<number, (granted: number[]) => void>();
  private connack: ((code: number) => void) | undefined;
  readonly closed: Promise<void>;
  /** PUBLISH packets received from the gateway, in order. */
  readonly received: { topic: string; messageId: number | undefined; bytes: number }[] = [];
  /** Whether a QoS 1 PUBLISH from the gateway is answered with PUBACK (as a device must). */
  acknowledge = true;

  private constructor(readonly socket: Socket) {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connack') this.connack?.(packet.returnCode ?? 0);
      else if ((packet.cmd === 'puback' || packet.cmd === 'pubrec') && packet.messageId !== undefined)
        this.acks.get(packet.messageId)?.resolve();
      else if (packet.cmd === 'suback' && packet.messageId !== undefined)
        this.subacks.get(packet.messageId)?.(packet.granted as number[]);
      else if (packet.cmd === 'publish') {
        this.received.push({
          topic: packet.topic,
          messageId: packet.messageId,
          bytes: packet.payload.length,
        });
        if (packet.qos === 1 && this.acknowledge)
          socket.write(generate({ cmd: 'puback', messageId: packet.messageId! }));
      }
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        for (const ack of [...this.acks.values()]) ack.reject(new Error('connection closed'));
        resolve();
      }),
    );
    socket.on('error', () => {});
  }

  /** Connects and waits for the CONNACK; rejects unless it accepts. */
  static open(port: number, connect: RawConnect): Promise<RawSession> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ port, host: '127.0.0.1' });
      const session = new RawSession(socket);
      const timer = setTimeout(() => reject(new Error('no CONNACK')), 10_000);
      session.connack = (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(session);
        else reject(new Error(`CONNACK ${code}`));
      };
      socket.once('connect', () => socket.write(connectPacket(connect)));
      void session.closed.then(() => reject(new Error('closed before CONNACK')));
    });
  }

  /** Writes a QoS 1 PUBLISH without waiting for anything. */
  send(topic: string, payload: string | Buffer, messageId: number, dup = false): void {
    this.socket.write(generate({ cmd: 'publish', topic, payload, qos: 1, messageId, dup, retain: false }));
  }

  /** Writes QoS 0 PUBLISHes, all in one write (so that the broker reads them in one go). */
  sendQos0(topic: string, payloads: readonly (string | Buffer)[]): void {
    this.socket.write(
      Buffer.concat(
        payloads.map((payload) =>
          generate({ cmd: 'publish', topic, payload, qos: 0, dup: false, retain: false }),
        ),
      ),
    );
  }

  /** Sends a QoS 1 PUBLISH and resolves at its PUBACK. */
  publish(topic: string, payload: string | Buffer, messageId: number, dup = false, timeoutMs = 10_000) {
    return new Promise<void>((resolve, reject) => {
      const settle = (err?: Error) => {
        clearTimeout(timer);
        this.acks.delete(messageId);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => settle(new Error(`no PUBACK for ${messageId}`)), timeoutMs);
      this.acks.set(messageId, { resolve: () => settle(), reject: settle });
      this.send(topic, payload, messageId, dup);
    });
  }

  /** Acknowledges a QoS 1 PUBLISH from the gateway (with `acknowledge` off). */
  puback(messageId: number): void {
    this.socket.write(generate({ cmd: 'puback', messageId }));
  }

  /** Subscribes to one filter and resolves with the granted QoS (0x80: refused). */
  subscribe(filter: string, qos: 0 | 1, messageId: number, timeoutMs = 10_000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no SUBACK for ${messageId}`)), timeoutMs);
      this.subacks.set(messageId, (granted) => {
        clearTimeout(timer);
        this.subacks.delete(messageId);
        resolve(granted[0]!);
      });
      this.socket.write(generate({ cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos }] }));
    });
  }

  /**
   * Stops reading the socket, as a device whose application hangs does: what the gateway sends piles
   * up in the kernel's buffers, then in the gateway's. `resume()` reads again.
   */
  stopReading(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Drops the connection without DISCONNECT, as a device losing its network does. */
  drop(): Promise<void> {
    this.socket.destroy();
    return this.closed;
  }
}
