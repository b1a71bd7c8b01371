import type { AedesOptions, Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import type { GatewayConfig } from '../config.js';
import type { GatewayMetrics } from '../metrics.js';
import { ConnectDeadlines, type DeadlineSocket } from './connect-deadline.js';

/**
 * What the gateway asks of a connection before it is an MQTT client: a CONNECT within
 * CONNECT_TIMEOUT_MS of accept. The listeners start the clock (`deadlines.arm`); the broker's
 * preConnect hook, which aedes calls as the CONNECT arrives, stops it.
 */
export interface ConnectionPolicy {
  readonly deadlines: ConnectDeadlines;
  /** Spread into the broker's aedes options. */
  readonly aedesOptions: Pick<AedesOptions, 'connectTimeout' | 'preConnect'>;
}

/** The accepted socket behind a client: for WebSocket the upgraded request's, else the stream itself. */
function socketOf(client: Client): DeadlineSocket {
  return (client.req?.socket ?? client.conn) as unknown as DeadlineSocket;
}

export function createConnectionPolicy(
  config: GatewayConfig,
  metrics: GatewayMetrics,
  log: Logger,
): ConnectionPolicy {
  const deadlines = new ConnectDeadlines(config.CONNECT_TIMEOUT_MS, (listener) => {
    metrics.limitReached('CONNECT_TIMEOUT_MS');
    // Counted, not logged one by one at info: a flood of idle sockets would become a flood of lines.
    log.debug({ listener, timeoutMs: config.CONNECT_TIMEOUT_MS }, 'no MQTT CONNECT in time: socket closed');
  });
  return {
    deadlines,
    aedesOptions: {
      // The same bound again from when aedes gets the stream; the clock started at accept ends first.
      connectTimeout: config.CONNECT_TIMEOUT_MS,
      preConnect: (client, _packet, done) => {
        deadlines.met(socketOf(client));
        done(null, true);
      },
    },
  };
}
