import type { Client, PublishPacket } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { type DeviceTopic, parseDeviceTopic } from '../../contract/topics.js';
import { type NotStoredError, reject } from '../errors.js';
import type { DeviceIdentity, TelemetryHandler } from '../ingest/telemetry-handler.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PresencePublisher } from '../presence.js';
import { aclDenied } from './acl-denied.js';
import { pausable } from './aedes-internals.js';
import type { Connections } from './connections.js';
import { type Done, holdInFlight } from './flow-control.js';
import type { PublishBudgets } from './publish-budget.js';

export interface PublishDeps {
  connections: Connections;
  budgets: PublishBudgets;
  telemetry: Pick<TelemetryHandler, 'handle' | 'rejectMessage'>;
  presence: Pick<PresencePublisher, 'publish' | 'status'>;
  /** MAX_IN_FLIGHT_PER_CLIENT. */
  maxInFlight: number;
  metrics: Pick<GatewayMetrics, 'publish' | 'limitReached' | 'aclDenied' | 'throttled'>;
  log: Logger;
}

/**
 * aedes' authorizePublish, as steps: hold the publish in flight, check it is on the client's own
 * device's topics, wait for the device's budgets, then hand it on by topic kind. It carries the
 * ingest because aedes writes the QoS 1 PUBACK before it calls `published`, so the only place that
 * can hold the PUBACK until JetStream has stored the event is authorizePublish, which runs before
 * aedes acknowledges anything.
 */
export function authorizePublish(
  deps: PublishDeps,
  client: Client | null,
  packet: PublishPacket,
  done: Done,
): void {
  if (client === null) {
    done(null); // a will left by a dead broker instance
    return;
  }
  const { connections, metrics } = deps;
  done = holdInFlight(
    pausable(client),
    connections.state(client),
    deps.maxInFlight,
    () => metrics.limitReached('MAX_IN_FLIGHT_PER_CLIENT'),
    done,
  );
  const topic = parseDeviceTopic(packet.topic);
  const identity = connections.identityFor(client, topic?.deviceId);
  if (
    topic === undefined ||
    identity === undefined ||
    topic.deviceId !== identity.deviceId ||
    topic.kind === 'commands'
  ) {
    metrics.publish('denied', packet.qos);
    done(aclDenied(deps, client, 'publish', packet.topic));
    return;
  }
  deps.budgets.admit(
    client,
    identity.deviceId,
    packet,
    (reason) => connections.markLost(client, reason),
    () => dispatch(deps, client, identity, topic, packet, done),
    done,
  );
}

/** Hands a publish to what stores its topic kind; `done` once stored (QoS 0: at once). */
function dispatch(
  deps: PublishDeps,
  client: Client,
  identity: DeviceIdentity,
  topic: DeviceTopic,
  packet: PublishPacket,
  done: Done,
): void {
  const { telemetry, presence, metrics, log } = deps;
  // Nothing here is served from aedes's retained store; keeping payloads there only costs memory.
  packet.retain = false;
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const qos = packet.qos;
  const finish = (err?: NotStoredError) => {
    metrics.publish(err ? 'not_stored' : 'acked', qos);
    if (err) log.warn({ clientId: client.id, err: err.message }, 'publish not stored: no PUBACK, closing');
    done(err ?? null);
  };
  // QoS 0 has no acknowledgement to hold, so it is not retried either.
  const wanted = qos === 0 ? () => false : () => !client.closed;
  const msg = {
    topic: packet.topic,
    payload,
    qos,
    packetId: packet.messageId,
    dup: packet.dup === true,
    clientId: client.id,
    encoding: topic.kind === 'telemetry' ? topic.encoding : 'json',
  } as const;
  switch (topic.kind) {
    case 'telemetry':
      telemetry.handle(identity, msg, wanted, finish);
      return;
    case 'status':
      presence.publish(
        {
          tenant: identity.tenant,
          deviceId: identity.deviceId,
          clientId: client.id,
          type: 'status',
          ...presence.status(payload),
        },
        (err) => finish(err as NotStoredError | undefined),
      );
      return;
    default: {
      const rejection = reject(
        'TOPIC_UNKNOWN',
        `'${packet.topic.slice(0, 256)}' is not a topic of the device contract`,
      );
      telemetry.rejectMessage(identity, msg, rejection, wanted, finish);
    }
  }
}
