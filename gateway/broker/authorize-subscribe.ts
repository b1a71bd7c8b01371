import type { Client, Subscription } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { isSparkplugStateFilter, sparkplugCommandsFilterOwner } from '../../contract/sparkplug.js';
import { commandsFilterOwner, isChildrenCommandsFilter } from '../../contract/topics.js';
import { SubscriptionLimitError } from '../errors.js';
import type { GatewayMetrics } from '../metrics.js';
import { aclDenied } from './acl-denied.js';
import type { Connections } from './connections.js';
import type { GatewayChildren } from './gateway-children.js';

export interface SubscribeDeps {
  connections: Connections;
  /** Undefined in AUTH_MODE=open, where no device is a gateway device. */
  children?: Pick<GatewayChildren, 'speaksFor'>;
  /** MAX_SUBSCRIPTIONS_PER_CLIENT. */
  maxSubscriptions: number;
  metrics: Pick<GatewayMetrics, 'subscriptionLimit' | 'limitReached' | 'aclDenied'>;
  log: Logger;
}

/**
 * aedes' authorizeSubscribe: a client subscribes to its own device's commands only (a gateway device
 * also to its children's, and as a Sparkplug edge node to its NCMD and DCMD), and holds at most
 * MAX_SUBSCRIPTIONS_PER_CLIENT filters, refused ones included (thousands of them would otherwise cost
 * a log line each, forever). Past the cap the connection is closed.
 */
export function authorizeSubscribe(
  deps: SubscribeDeps,
  client: Client,
  sub: Subscription,
  done: (err: Error | null, sub?: Subscription | null) => void,
): void {
  const { connections, metrics, log } = deps;
  const state = connections.state(client);
  const cap = deps.maxSubscriptions;
  if (state === undefined) {
    done(null, null);
    return;
  }
  if (!state.subscriptions.has(sub.topic) && state.subscriptions.size + state.refusedSubscriptions >= cap) {
    if (!client.closed) {
      metrics.subscriptionLimit.inc();
      metrics.limitReached('MAX_SUBSCRIPTIONS_PER_CLIENT');
      log.warn({ clientId: client.id, limit: cap }, 'too many subscriptions: disconnecting');
      connections.markLost(client, 'subscription limit');
    }
    done(new SubscriptionLimitError(cap, client.id));
    return;
  }
  const owner = commandsFilterOwner(sub.topic);
  const identity = connections.identityFor(client, owner);
  // A gateway device also gets its children's commands: `devices/+/commands/#` (a mosquitto bridge's
  // `in` topic) or one child's; session-store.ts forwards it only its own and its children's.
  const allowed =
    identity !== undefined &&
    (owner === identity.deviceId ||
      (identity.gateway !== undefined && sparkplugFilterAllowed(sub.topic, identity.deviceId)) ||
      (identity.gateway !== undefined &&
        (isChildrenCommandsFilter(sub.topic) ||
          (owner !== undefined && deps.children?.speaksFor(identity.deviceId, owner) === true))));
  if (!allowed) {
    state.refusedSubscriptions++;
    aclDenied(deps, client, 'subscribe', sub.topic);
    // [MQTT-3.9.3] SUBACK return code 0x80: the subscription fails, the connection stays.
    done(null, null);
    return;
  }
  state.subscriptions.add(sub.topic);
  done(null, sub);
}

/**
 * A Sparkplug B edge node (a gateway device) subscribes to its own commands, NCMD and DCMD under its
 * own edge node id, and may watch host applications' STATE (README, Sparkplug B).
 */
function sparkplugFilterAllowed(filter: string, deviceId: string): boolean {
  return sparkplugCommandsFilterOwner(filter) === deviceId || isSparkplugStateFilter(filter);
}

/** aedes' `unsubscribe` event: the filters no longer count against the cap. */
export function unsubscribed(connections: Connections, client: Client, topics: readonly string[]): void {
  const held = connections.state(client)?.subscriptions;
  for (const topic of topics) held?.delete(topic);
}
