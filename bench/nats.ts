import { rmSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { type NatsServer, type NatsServerOptions, startNatsServer } from '../test/kit/nats-server.js';
import { killQuietly } from './child-process.js';
import { hold } from './lifecycle.js';

/** A nats-server for a bench: stopped, and its store deleted, however the bench ends. */
export async function heldNatsServer(options: NatsServerOptions): Promise<NatsServer> {
  const server = await startNatsServer(options);
  hold(
    `nats-server ${options.serverName ?? ''}`.trim(),
    () => server.dispose(),
    () => {
      killQuietly(server.pid);
      rmSync(server.storeDir, { recursive: true, force: true });
    },
  );
  return server;
}

/** A NATS connection closed however the bench ends. */
export async function heldNatsConnection(url: string, name: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, name });
  hold(
    `nats connection ${name}`,
    () => nc.close(),
    () => {},
  );
  return nc;
}
