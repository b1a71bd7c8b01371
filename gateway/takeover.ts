import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import { ClientTakeover } from '../contract/event.js';
import { GATEWAY_TAKEOVER_SUBJECT } from '../contract/subjects.js';

/**
 * One connection per client id across gateways. MQTT says a new connection under a client id takes
 * the old one over [MQTT-3.1.4-2]; aedes does so within one gateway, but behind a load balancer a
 * device reconnecting to another gateway left its old connection open on the first until its
 * keepalive ran out (up to 1.5 × MAX_KEEPALIVE_SECONDS), and its persistent session there for
 * SESSION_EXPIRY_MS. Each gateway announces every connection it accepts on core NATS; every other
 * gateway closes its own under that id and drops its persistent session for it.
 *
 * Core NATS, not the `connected` presence event: presence is retried for a minute, and a `connected`
 * arriving that late would close the device's newer connection; a notice is only worth anything
 * while fresh, so none is held or retried (as heartbeats). Not announced while NATS is reconnecting,
 * for the same reason: the client would send it on reconnecting, stale. A notice lost so leaves the
 * old connection to its keepalive, as before.
 */
export interface TakeoverOptions {
  nc: NatsConnection;
  gatewayId: string;
  /** Closes this gateway's connection under the client id, if it has one: true when it had. */
  closeConnection: (clientId: string, by: string) => boolean;
  /** Drops this gateway's persistent session under the client id: true when it had one. */
  dropSession: (clientId: string) => boolean;
  takenOver: (what: 'connection' | 'session') => void;
  log: Logger;
}

export interface Takeover {
  /** This gateway accepted a connection under `clientId`. */
  announce(clientId: string): void;
  close(): void;
}

export function startTakeover(o: TakeoverOptions): Takeover {
  let connected = true; // started after connect() resolved
  const status = o.nc.status();
  void (async () => {
    for await (const s of status) {
      if (s.type === 'disconnect') connected = false;
      else if (s.type === 'reconnect') connected = true;
    }
  })();

  const sub: Subscription = o.nc.subscribe(GATEWAY_TAKEOVER_SUBJECT, {
    callback: (err, msg) => {
      if (err) return;
      let notice: ClientTakeover;
      try {
        notice = ClientTakeover.parse(msg.json());
      } catch {
        o.log.debug({ subject: msg.subject }, 'takeover notice not understood: ignored');
        return;
      }
      if (notice.gateway === o.gatewayId) return;
      if (o.closeConnection(notice.clientId, notice.gateway)) o.takenOver('connection');
      if (o.dropSession(notice.clientId)) {
        o.takenOver('session');
        o.log.info(
          { clientId: notice.clientId, by: notice.gateway },
          'client id connected at another gateway: persistent session here dropped',
        );
      }
    },
  });

  return {
    announce(clientId) {
      if (!connected || o.nc.isClosed() || o.nc.isDraining()) return;
      const notice: ClientTakeover = { gateway: o.gatewayId, clientId, at: new Date().toISOString() };
      try {
        o.nc.publish(GATEWAY_TAKEOVER_SUBJECT, JSON.stringify(notice));
      } catch (err) {
        o.log.debug({ err, clientId }, 'takeover notice not published');
      }
    },
    close() {
      sub.unsubscribe();
      (status as { stop?: () => void }).stop?.();
    },
  };
}
