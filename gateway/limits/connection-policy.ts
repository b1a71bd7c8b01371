import type { AedesOptions, Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import type { GatewayConfig } from '../config.js';
import type { GatewayMetrics } from '../metrics.js';
import { ConnectDeadlines, type DeadlineSocket } from './connect-deadline.js';
import { keepaliveFor } from './keepalive-policy.js';

/**
 * What the gateway asks of a connection before it is an MQTT client: a CONNECT within
 * CONNECT_TIMEOUT_MS of accept, and a keepalive within MIN/MAX_KEEPALIVE_SECONDS. The listeners
 * start the clock (`deadlines.arm`); the broker's preConnect hook, which aedes calls as the CONNECT
 * arrives and before it reads the keepalive (connect.js setKeepAlive), stops it and sets the keepalive.
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
  const policy = { minSeconds: config.MIN_KEEPALIVE_SECONDS, maxSeconds: config.MAX_KEEPALIVE_SECONDS };
  return {
    deadlines,
    aedesOptions: {
      // The same bound again from when aedes gets the stream; the clock started at accept ends first.
      connectTimeout: config.CONNECT_TIMEOUT_MS,
      preConnect: (client, packet, done) => {
        deadlines.met(socketOf(client));
        const keepalive = keepaliveFor(packet.keepalive ?? 0, policy);
        if (keepalive.applied !== undefined) {
          metrics.limitReached(keepalive.applied);
          log.debug(
            { clientId: packet.clientId, asked: packet.keepalive, applied: keepalive.seconds },
            'keepalive outside the policy: the bound applies',
          );
          packet.keepalive = keepalive.seconds;
        }
        done(null, true);
      },
    },
  };
}
