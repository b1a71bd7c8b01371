import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import type { GatewayHeartbeat } from '../contract/event.js';
import { gatewayHeartbeatSubject } from '../contract/subjects.js';

/**
 * Tells the presence owner this gateway is alive, on core NATS: a heartbeat is only worth anything
 * while it is fresh, so none is stored, held or retried. When they stop for HEARTBEAT_MISSES
 * intervals, the owner takes every connection this gateway reported as lost.
 */
export interface HeartbeatOptions {
  nc: NatsConnection;
  gatewayId: string;
  intervalMs: number;
  /** Device connections open now. */
  connections: () => number;
  log: Logger;
}

export interface Heartbeat {
  close(): void;
}

export function startHeartbeat(o: HeartbeatOptions): Heartbeat {
  const subject = gatewayHeartbeatSubject(o.gatewayId);
  let connected = true; // started after connect() resolved
  const status = o.nc.status();
  void (async () => {
    for await (const s of status) {
      if (s.type === 'disconnect') connected = false;
      else if (s.type === 'reconnect') connected = true;
    }
  })();

  const beat = () => {
    // Published while reconnecting, a heartbeat could be held and arrive stale: it is skipped instead.
    if (!connected || o.nc.isClosed() || o.nc.isDraining()) return;
    const heartbeat: GatewayHeartbeat = {
      gateway: o.gatewayId,
      at: new Date().toISOString(),
      intervalMs: o.intervalMs,
      connections: o.connections(),
    };
    try {
      o.nc.publish(subject, JSON.stringify(heartbeat));
    } catch (err) {
      // The connection closed between the check and the publish; the next beat is skipped anyway.
      o.log.debug({ err }, 'heartbeat not published');
    }
  };
  beat();
  const timer = setInterval(beat, o.intervalMs);
  timer.unref();

  return {
    close() {
      clearInterval(timer);
      (status as { stop?: () => void }).stop?.();
    },
  };
}
