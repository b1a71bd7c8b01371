import type { Server } from 'node:net';

export class ListenError extends Error {
  readonly code = 'LISTEN_FAILED';
  constructor(
    readonly what: string,
    readonly port: number,
    cause: NodeJS.ErrnoException,
  ) {
    const why =
      cause.code === 'EADDRINUSE'
        ? `port ${port} is already in use (set another with the ${what} setting, or stop what holds it)`
        : cause.code === 'EACCES'
          ? `no permission to listen on port ${port}`
          : cause.message;
    super(`${what}: ${why}`, { cause });
    this.name = 'ListenError';
  }
}

/**
 * Listens and resolves with the bound port (useful with port 0), or rejects with a one-line reason.
 * `backlog`: connections the kernel queues before they are accepted (Node's default is 511).
 */
export function listen(
  server: Server,
  port: number,
  host: string,
  what: string,
  backlog?: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new ListenError(what, port, err));
    server.once('error', onError);
    server.listen({ port, host, ...(backlog === undefined ? {} : { backlog }) }, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address !== null ? address.port : port);
    });
  });
}

/**
 * Stops accepting connections, and resolves once the listening socket is closed: established
 * connections stay, for their owner to close. (`server.close(cb)` calls back only once every
 * connection has ended, which for MQTT devices that stay connected is never.)
 */
export function stopAccepting(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close();
    resolve();
  });
}

/** Stops accepting and resolves once every connection has ended. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
