import { connect, type Socket } from 'node:net';
import { generate } from 'mqtt-packet';

/**
 * MQTT from raw sockets, for the hostile-input tests that need thousands of connections: an mqtt.js
 * client costs the test process far more than the gateway spends on it.
 */
export interface RawConnect {
  clientId: string;
  username?: string;
  password?: string;
  keepalive?: number;
}

export function connectPacket({ clientId, username, password, keepalive = 60 }: RawConnect): Buffer {
  return generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
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
