import {
  createInbox,
  type Msg,
  type NatsConnection,
  headers as natsHeaders,
  type Subscription,
} from '@nats-io/nats-core';
import type { PublishPacket } from 'aedes';
import type { Logger } from '../common/logger.js';
import { type CommandReply, GatewayCommandOutcome } from '../contract/commands.js';
import { GatewayHeartbeat } from '../contract/event.js';
import { DEFAULT_TENANT } from '../contract/ids.js';
import {
  COMMAND_SUBJECT_HEADER,
  COMMANDS_QUEUE_GROUP,
  COMMANDS_SUBSCRIPTION,
  COMMANDS_SUBSCRIPTION_BARE,
  GATEWAY_COMMANDS_RELAY_SUBJECT,
  GATEWAY_HEARTBEAT_SUBJECTS,
  parseCommandsSubject,
} from '../contract/subjects.js';
import { commandsTopic } from '../contract/topics.js';
import type { DeviceBroker } from './broker/device-broker.js';
import { commandAnswer, partialAnswer } from './command-answer.js';
import type { CommandTracker } from './command-tracker.js';
import type { GatewayDirectory } from './gateway-directory.js';
import type { GatewayMetrics } from './metrics.js';
import type { RegistryCache } from './registry/registry-cache.js';
import type { BuiltCommand } from './sparkplug/commands.js';

/**
 * `commands.{tenant}.{deviceId}[.{path…}]` on NATS → `devices/{deviceId}/commands[/{path…}]` at QoS 1.
 *
 * A device may be connected to any gateway, or have its persistent session on one, so each command
 * must reach all of them; and a request must get one answer that says what became of it. One
 * gateway of the COMMANDS_QUEUE_GROUP takes each command, answers `unknown_device` itself, and
 * otherwise relays it on GATEWAY_COMMANDS_RELAY_SUBJECT to every gateway (itself included), which
 * delivers it to what it holds of the device and replies with what it did; the relaying gateway
 * merges those replies into the answer (command-answer.ts). `offline` needs a reply from every
 * gateway alive (heard from by heartbeat, by it or by any that replied): a gateway that does not
 * reply within COMMAND_GATHER_TIMEOUT_MS leaves a request for an offline device unanswered, never
 * wrongly answered.
 */
export interface DownlinkDeps {
  nc: NatsConnection;
  broker: DeviceBroker;
  /** Undefined in AUTH_MODE=open. */
  registry: RegistryCache | undefined;
  directory: GatewayDirectory;
  tracker: CommandTracker;
  /**
   * A command as Sparkplug B (NCMD/DCMD) when the device is a Sparkplug edge node or device born here
   * (sparkplugCommandFor); undefined when it is not, or in AUTH_MODE=open.
   */
  sparkplug?: (tenant: string, deviceId: string, body: Uint8Array) => BuiltCommand | undefined;
  metrics: GatewayMetrics;
  log: Logger;
}

/** Gateways on one NATS answer in milliseconds; one silent for a second is taken as not answering. */
export const COMMAND_GATHER_TIMEOUT_MS = 1_000;

export function startDownlink(deps: DownlinkDeps): Subscription[] {
  const { nc, directory, metrics, log } = deps;
  const watchHeartbeats = (err: Error | null, msg: Msg) => {
    if (err) return;
    const beat = GatewayHeartbeat.safeParse(safeJson(msg));
    if (beat.success) directory.seen(beat.data.gateway, beat.data.intervalMs);
  };
  const onCommand = (err: Error | null, msg: Msg) => {
    if (err) return;
    coordinate(deps, msg).catch((e: Error) => {
      metrics.downlink.labels('error').inc();
      log.warn({ subject: msg.subject, err: e.message }, 'command not relayed');
    });
  };
  const onRelayed = (err: Error | null, msg: Msg) => {
    if (err) return;
    deliverHere(deps, msg);
  };
  return [
    nc.subscribe(GATEWAY_HEARTBEAT_SUBJECTS, { callback: watchHeartbeats }),
    nc.subscribe(GATEWAY_COMMANDS_RELAY_SUBJECT, { callback: onRelayed }),
    nc.subscribe(COMMANDS_SUBSCRIPTION, { queue: COMMANDS_QUEUE_GROUP, callback: onCommand }),
    nc.subscribe(COMMANDS_SUBSCRIPTION_BARE, { queue: COMMANDS_QUEUE_GROUP, callback: onCommand }),
  ];
}

/** This gateway took the command for the group: relay it to every gateway and answer. */
async function coordinate(deps: DownlinkDeps, msg: Msg): Promise<void> {
  const { nc, registry, metrics } = deps;
  const target = parseCommandsSubject(msg.subject);
  if (target === undefined) return;
  const known = registry
    ? registry.get(target.deviceId)?.tenant === target.tenant
    : target.tenant === DEFAULT_TENANT;
  if (!known) {
    metrics.downlink.labels('unknown_device').inc();
    answer(msg, { delivered: false, status: 'unknown_device', error: 'unknown device for this tenant' });
    return;
  }
  const headers = natsHeaders();
  headers.set(COMMAND_SUBJECT_HEADER, msg.subject);
  if (!msg.reply) {
    metrics.downlink.labels('sent').inc();
    nc.publish(GATEWAY_COMMANDS_RELAY_SUBJECT, msg.data, { headers });
    return;
  }
  const reply = await gather(deps, msg.data, headers);
  metrics.downlink.labels(reply?.status ?? 'unanswered').inc();
  if (reply === undefined)
    deps.log.warn(
      { subject: msg.subject, waitedMs: COMMAND_GATHER_TIMEOUT_MS },
      'command request left unanswered: a gateway did not say what it holds of the device',
    );
  else answer(msg, reply);
}

/** Relays a command and collects every gateway's outcome, until the answer is certain or the wait ends. */
function gather(
  deps: DownlinkDeps,
  data: Uint8Array,
  headers: ReturnType<typeof natsHeaders>,
): Promise<CommandReply | undefined> {
  const { nc, directory } = deps;
  const expected = directory.live();
  const outcomes = new Map<string, GatewayCommandOutcome>();
  const inbox = createInbox();
  return new Promise((resolve) => {
    const finish = (reply: CommandReply | undefined) => {
      clearTimeout(timer);
      sub.unsubscribe();
      resolve(reply);
    };
    const sub = nc.subscribe(inbox, {
      callback: (err, m) => {
        if (err) return;
        const outcome = GatewayCommandOutcome.safeParse(safeJson(m));
        if (!outcome.success) return;
        outcomes.set(outcome.data.gateway, outcome.data);
        const reply = commandAnswer([...outcomes.values()], expected);
        if (reply !== undefined) finish(reply);
      },
    });
    const timer = setTimeout(() => finish(partialAnswer([...outcomes.values()])), COMMAND_GATHER_TIMEOUT_MS);
    nc.publish(GATEWAY_COMMANDS_RELAY_SUBJECT, data, { reply: inbox, headers });
  });
}

/** A relayed command: deliver it to what this gateway holds of the device, and say what that was. */
function deliverHere(deps: DownlinkDeps, msg: Msg): void {
  const { broker, directory, tracker, log } = deps;
  const target = parseCommandsSubject(msg.headers?.get(COMMAND_SUBJECT_HEADER) ?? '');
  if (target === undefined) return;
  const sparkplug = deps.sparkplug?.(target.tenant, target.deviceId, msg.data);
  if (sparkplug !== undefined && !sparkplug.ok) {
    log.debug({ device: target.deviceId, detail: sparkplug.detail }, 'Sparkplug command refused');
    if (msg.reply) {
      const outcome: GatewayCommandOutcome = {
        gateway: directory.self,
        delivered: 0,
        queued: 0,
        queueFull: 0,
        backlogged: 0,
        connected: broker.isOnline(target.deviceId) ? 1 : 0,
        known: [...directory.live()],
        refused: sparkplug.detail,
      };
      msg.respond(JSON.stringify(outcome));
    }
    return;
  }
  // A Buffer of its own: the tracker knows the command by it in every aedes hook.
  const payload = Buffer.from(sparkplug?.payload ?? msg.data);
  const tally = tracker.track(payload);
  // [tck-id-topics-ncmd-mqtt], [tck-id-topics-dcmd-mqtt] NCMD and DCMD go at QoS 0, not retained.
  const packet = {
    cmd: 'publish',
    topic: sparkplug?.topic ?? commandsTopic(target.deviceId, target.path),
    payload,
    qos: sparkplug === undefined ? 1 : 0,
    retain: false,
    dup: false,
  } as PublishPacket;
  broker.aedes.publish(packet, (err) => {
    tracker.untrack(payload);
    if (err) log.warn({ device: target.deviceId, err: err.message }, 'command not delivered');
    if (!msg.reply) return;
    const outcome: GatewayCommandOutcome = {
      gateway: directory.self,
      ...tally,
      connected: broker.isOnline(target.deviceId) ? 1 : 0,
      known: [...directory.live()],
    };
    msg.respond(JSON.stringify(outcome));
  });
}

function answer(msg: Msg, reply: CommandReply): void {
  if (msg.reply) msg.respond(JSON.stringify(reply));
}

function safeJson(msg: Msg): unknown {
  try {
    return msg.json();
  } catch {
    return undefined;
  }
}
