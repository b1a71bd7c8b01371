import type { CommandReply, GatewayCommandOutcome } from '../contract/commands.js';

/**
 * The one answer to a command request, from what each gateway did with it. Something done somewhere
 * (delivered, queued, refused for a full queue, or a connection that is not listening) is known as
 * soon as that gateway says so; "offline" only once every gateway that could hold the device has
 * said it holds nothing: all those the gathering gateway hears heartbeats from, and all those any
 * of them does.
 */
export function commandAnswer(
  outcomes: readonly GatewayCommandOutcome[],
  expected: ReadonlySet<string>,
): CommandReply | undefined {
  const found = strongest(outcomes);
  // Nothing beats delivered, and a refusal is certain (only the gateway holding the edge node's
  // session can check a Sparkplug write); anything weaker could still become delivered while gateways
  // are missing.
  if (found?.status === 'delivered' || found?.status === 'refused') return found;
  if (!isComplete(outcomes, expected)) return undefined;
  return found ?? { delivered: false, status: 'offline' };
}

/** When the wait is over without every gateway's word: what is known, but never "offline". */
export function partialAnswer(outcomes: readonly GatewayCommandOutcome[]): CommandReply | undefined {
  return strongest(outcomes);
}

export function isComplete(
  outcomes: readonly GatewayCommandOutcome[],
  expected: ReadonlySet<string>,
): boolean {
  const heard = new Set(outcomes.map((o) => o.gateway));
  for (const id of expected) if (!heard.has(id)) return false;
  for (const o of outcomes) for (const id of o.known) if (!heard.has(id)) return false;
  return true;
}

/**
 * A device on two gateways at once (two client ids, or a session left behind on one when it moved)
 * gets the most useful truth: it has the command if any connection of it does. A session that will
 * hand it over beats a connection too backlogged to take it, which says more than a full queue of a
 * session elsewhere.
 */
function strongest(outcomes: readonly GatewayCommandOutcome[]): CommandReply | undefined {
  const sum = (key: 'delivered' | 'queued' | 'backlogged' | 'queueFull' | 'connected') =>
    outcomes.reduce((n, o) => n + o[key], 0);
  if (sum('delivered') > 0) return { delivered: true, status: 'delivered' };
  const refused = outcomes.find((o) => o.refused !== undefined)?.refused;
  if (refused !== undefined) return { delivered: false, status: 'refused', error: refused };
  if (sum('queued') > 0) return { delivered: false, status: 'queued' };
  if (sum('backlogged') > 0) return { delivered: false, status: 'backlogged' };
  if (sum('queueFull') > 0) return { delivered: false, status: 'queue_full' };
  if (sum('connected') > 0) return { delivered: false, status: 'not_subscribed' };
  return undefined;
}
