import type { Client, PublishPacket } from 'aedes';
import type { Logger } from '../../common/logger.js';
import {
  type DeviceTopic,
  isBridgeStateTopic,
  type PayloadEncoding,
  parseDeviceTopic,
} from '../../contract/topics.js';
import { NotStoredError, type Rejection, reject } from '../errors.js';
import type { DeviceIdentity, IncomingPublish, TelemetryHandler } from '../ingest/telemetry-handler.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PresencePublisher } from '../presence.js';
import { aclDenied } from './acl-denied.js';
import { markIngested, pausable } from './aedes-internals.js';
import type { Connections } from './connections.js';
import { type Done, holdInFlight } from './flow-control.js';
import type { ChildVerdict, GatewayChildren } from './gateway-children.js';
import { guarded } from './guarded.js';
import type { PublishBudgets } from './publish-budget.js';

export interface PublishDeps {
  connections: Connections;
  budgets: PublishBudgets;
  telemetry: Pick<TelemetryHandler, 'handle' | 'rejectMessage'>;
  presence: Pick<PresencePublisher, 'publish' | 'status'>;
  /** Undefined in AUTH_MODE=open, where no device is a gateway device. */
  children?: Pick<GatewayChildren, 'resolve'>;
  /**
   * A gateway device's publish on `spBv1.0/…` (sparkplug-publish.ts), true when taken; false refuses
   * it as any topic outside the device's own. Undefined in AUTH_MODE=open.
   */
  sparkplug?: (client: Client, gateway: DeviceIdentity, packet: PublishPacket, done: Done) => boolean;
  /** MAX_IN_FLIGHT_PER_CLIENT. */
  maxInFlight: number;
  metrics: Pick<
    GatewayMetrics,
    'publish' | 'limitReached' | 'aclDenied' | 'throttled' | 'sparkplugSkipped' | 'sparkplugRebirth'
  >;
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
  if (identity?.gateway !== undefined && forGatewayDevice(deps, client, identity, topic, packet, done))
    return;
  if (
    topic === undefined &&
    identity?.gateway !== undefined &&
    deps.sparkplug?.(client, identity, packet, done) === true
  )
    return;
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
  admit(deps, client, identity, topic, packet, done);
}

/**
 * What only a gateway device may publish (README, Gateway devices), or false for what it publishes
 * as any device does. `$SYS/broker/connection/{name}/state`, its mosquitto bridge's notification, is
 * its own status. `devices/{child}/telemetry|status` is its child's, stored as the child's. One for a
 * device it may not speak for is acknowledged and dead-lettered (CHILD_DENIED, CHILD_LIMIT), not a
 * reason to close the connection as other ACL refusals are: MQTT 3.1.1 has no negative PUBACK, and
 * a bridge with `cleansession false` sends an unacknowledged message first again on every reconnect,
 * so one refused reading would stop every other child's for good.
 */
function forGatewayDevice(
  deps: PublishDeps,
  client: Client,
  gateway: DeviceIdentity,
  topic: DeviceTopic | undefined,
  packet: PublishPacket,
  done: Done,
): boolean {
  if (topic === undefined) {
    if (!isBridgeStateTopic(packet.topic)) return false;
    admit(deps, client, gateway, { kind: 'status', deviceId: gateway.deviceId }, packet, done);
    return true;
  }
  if (topic.deviceId === gateway.deviceId || topic.kind === 'commands' || deps.children === undefined)
    return false;
  resolveChild(deps, client, gateway, topic.deviceId, packet, done, (verdict) => {
    if (!verdict.ok) {
      admit(deps, client, gateway, childRefused(deps, client, topic.deviceId, verdict, packet), packet, done);
      return;
    }
    deps.connections.childSeen(client, verdict.identity);
    admit(deps, client, verdict.identity, topic, packet, done);
  });
  return true;
}

/**
 * Whether a gateway device may publish for `childId` (gateway-children.ts), `decided` at once or once
 * the child is registered. A registration that fails leaves the publish unacknowledged and closes
 * the connection (NotStoredError).
 */
export function resolveChild(
  deps: PublishDeps,
  client: Client,
  gateway: DeviceIdentity,
  childId: string,
  packet: PublishPacket,
  done: Done,
  decided: (verdict: ChildVerdict) => void,
): void {
  const verdict = deps.children!.resolve(gateway, childId);
  if (!(verdict instanceof Promise)) {
    decided(verdict);
    return;
  }
  // Off aedes' call stack: a throw here must close this connection, as guarded() does for the hook,
  // not become an unhandled rejection.
  verdict.then(
    (v) => guarded(deps.log, client.id, () => decided(v), done),
    (err: Error) => {
      deps.metrics.publish('not_stored', packet.qos);
      deps.log.warn({ clientId: client.id, err: err.message }, 'child not registered: no PUBACK, closing');
      done(new NotStoredError(`child '${childId}' not registered: ${err.message}`, '', { cause: err }));
    },
  );
}

/** A publish for a child the gateway device may not speak for: counted, logged, its dead-letter reason. */
export function childRefused(
  deps: PublishDeps,
  client: Client,
  childId: string,
  verdict: Extract<ChildVerdict, { ok: false }>,
  packet: PublishPacket,
): Rejection {
  deps.metrics.aclDenied.labels('publish').inc();
  deps.log.debug(
    { clientId: client.id, topic: packet.topic.slice(0, 256), reason: verdict.reason },
    'gateway device published for a device it may not speak for: dead-lettered',
  );
  return verdict.reason === 'CHILD_LIMIT'
    ? reject(
        verdict.reason,
        `'${childId}' would be one more child than GATEWAY_DEVICE_MAX_CHILDREN registered through this gateway device`,
      )
    : reject(verdict.reason, `'${childId}' is not a child of this gateway device`);
}

/** Waits for the device's budgets, then dispatches. */
export function admit(
  deps: PublishDeps,
  client: Client,
  identity: DeviceIdentity,
  what: DeviceTopic | Rejection,
  packet: PublishPacket,
  done: Done,
): void {
  deps.budgets.admit(
    client,
    identity.deviceId,
    packet,
    (reason) => deps.connections.markLost(client, reason),
    () => dispatch(deps, client, identity, what, packet, done),
    done,
  );
}

/**
 * Hands a publish to what stores its topic kind, or dead-letters it whole with a rejection; `done`
 * once stored (QoS 0: at once).
 */
function dispatch(
  deps: PublishDeps,
  client: Client,
  identity: DeviceIdentity,
  what: DeviceTopic | Rejection,
  packet: PublishPacket,
  done: Done,
): void {
  const { telemetry, presence } = deps;
  markIngested(packet);
  const { payload, msg, wanted, finish } = incoming(
    deps,
    client,
    packet,
    'kind' in what && what.kind === 'telemetry' ? what.encoding : 'json',
    done,
  );
  if (!('kind' in what)) {
    telemetry.rejectMessage(identity, msg, what, wanted, finish);
    return;
  }
  switch (what.kind) {
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

/**
 * A publish as the ingest takes it, and what answers it: `finish` counts its outcome and calls `done`
 * (an error closes the connection, with no PUBACK); `wanted` says whether storing it is still of use.
 */
export function incoming(
  deps: Pick<PublishDeps, 'metrics' | 'log'>,
  client: Client,
  packet: PublishPacket,
  encoding: PayloadEncoding,
  done: Done,
) {
  // Nothing here is served from aedes's retained store; keeping payloads there only costs memory.
  packet.retain = false;
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const qos = packet.qos;
  const finish = (err?: NotStoredError) => {
    deps.metrics.publish(err ? 'not_stored' : 'acked', qos);
    if (err)
      deps.log.warn({ clientId: client.id, err: err.message }, 'publish not stored: no PUBACK, closing');
    done(err ?? null);
  };
  // QoS 0 has no acknowledgement to hold, so it is not retried either.
  const wanted = qos === 0 ? () => false : () => !client.closed;
  const msg: IncomingPublish = {
    topic: packet.topic,
    payload,
    qos,
    packetId: packet.messageId,
    dup: packet.dup === true,
    clientId: client.id,
    encoding,
  };
  return { payload, msg, wanted, finish };
}
