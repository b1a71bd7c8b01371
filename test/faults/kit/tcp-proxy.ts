import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

/**
 * A TCP proxy a drill controls, put between a client and a server (the gateway and nats-server) to
 * break the network between them without touching either process:
 * - `cut(ms)`: every open connection is reset and new ones are reset on accept for `ms` (a link
 *   down: the client sees its connection drop and its reconnect attempts fail), then accepted again.
 * - `stall(ms)`: connections stay open but nothing is forwarded for `ms`, then everything held goes
 *   through in order (a link that stops carrying packets and recovers before TCP gives up).
 * Loopback only, an ephemeral port; bytes are forwarded as they come, without backpressure (drill
 * traffic is small).
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections forwarded right now. */
  readonly connections: number;
  /** Connections accepted (and forwarded) since the start. */
  readonly accepted: number;
  cut(ms: number): Promise<void>;
  stall(ms: number): Promise<void>;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  /** Chunks read while stalled, per direction, written out in order on resume. */
  toUpstream: Buffer[];
  toClient: Buffer[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let refusing = false;
  let stalled = false;
  let accepted = 0;

  const drop = (pair: Pair) => {
    pairs.delete(pair);
    // A reset, not a FIN: what a broken link looks like to the client is an error, not a clean close.
    if (!pair.client.destroyed) pair.client.resetAndDestroy();
    if (!pair.upstream.destroyed) pair.upstream.resetAndDestroy();
  };

  const server: Server = createServer((client) => {
    if (refusing) {
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    accepted++;
    client.setNoDelay(true);
    const upstream = tcpConnect({ port: targetPort, host: targetHost });
    upstream.setNoDelay(true);
    const pair: Pair = { client, upstream, toUpstream: [], toClient: [] };
    pairs.add(pair);
    client.on('data', (chunk: Buffer) => {
      if (stalled) pair.toUpstream.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (stalled) pair.toClient.push(chunk);
      else client.write(chunk);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', () => drop(pair));
      socket.on('close', () => drop(pair));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;

  return {
    port,
    get connections() {
      return pairs.size;
    },
    get accepted() {
      return accepted;
    },
    async cut(ms) {
      refusing = true;
      for (const pair of [...pairs]) drop(pair);
      await sleep(ms);
      refusing = false;
    },
    async stall(ms) {
      stalled = true;
      await sleep(ms);
      stalled = false;
      for (const pair of pairs) {
        for (const chunk of pair.toUpstream.splice(0)) pair.upstream.write(chunk);
        for (const chunk of pair.toClient.splice(0)) pair.client.write(chunk);
      }
    },
    async close() {
      refusing = true;
      for (const pair of [...pairs]) drop(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
