import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';

/** Every service reconnects forever, a second apart, and waits for the first connection too. */
const RECONNECT_WAIT_MS = 1_000;

export function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    servers: url.split(',').map((s) => s.trim()),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    // A service started before NATS (compose, systemd) waits rather than exits.
    waitOnFirstConnect: true,
  });
}
