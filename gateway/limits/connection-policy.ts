import type { AedesOptions, Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import type { GatewayConfig } from '../config.js';
import type { GatewayMetrics } from '../metrics.js';
import { ConnectDeadlines, type DeadlineSocket } from './connect-deadline.js';
import { keepaliveFor } from './keepalive-policy.js';
import { OutgoingBytes } from './outgoing-bytes.js';

/**
 * What the gateway asks of a connection before it is an MQTT client: a CONNECT within
 * CONNECT_TIMEOUT_MS of accept, and a keepalive within MIN/MAX_KEEPALIVE_SECONDS. The listeners
 * start the clock (`deadlines.arm`); the broker's preConnect hook, which aedes calls as the CONNECT
 * arrives and before it reads the keepalive (connect.js setKeepAlive), stops it and sets the keepalive.
 * It also takes over the connection's deliveries before it can subscribe (`outgoing`): what is
 * written to it and not yet taken is bounded by MAX_UNSENT_BYTES_PER_CLIENT and DRAIN_TIMEOUT_MS,
 * and never holds up anyone else's.
 */
export interface ConnectionPolicy {
  readonly deadlines: ConnectDeadlines;
  /** Checked in aedes' authorizeForward, for each delivery. */
  readonly outgoing: OutgoingBytes;
  /** Spread into the broker's aedes options. */
  readonly aedesOptions: Pick<AedesOptions, 'connectTimeout' | 'drainTimeout' | 'preConnect'>;
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
  const outgoing = new OutgoingBytes({
    maxBytes: config.MAX_UNSENT_BYTES_PER_CLIENT,
    drainTimedOut: (client) => {
      metrics.limitReached('DRAIN_TIMEOUT_MS');
      log.warn(
        { clientId: client.id, timeoutMs: config.DRAIN_TIMEOUT_MS },
        'what was written to the connection did not drain in time: closing it',
      );
    },
  });
  return {
    deadlines,
    outgoing,
    aedesOptions: {
      // The same bound again from when aedes gets the stream; the clock started at accept ends first.
      connectTimeout: config.CONNECT_TIMEOUT_MS,
      drainTimeout: config.DRAIN_TIMEOUT_MS,
      preConnect: (client, packet, done) => {
        deadlines.met(socketOf(client));
        outgoing.watch(client);
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
