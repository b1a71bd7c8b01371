import type { Msg, NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import { DEFAULT_TENANT } from '../contract/ids.js';
import {
  COMMANDS_SUBSCRIPTION,
  COMMANDS_SUBSCRIPTION_BARE,
  parseCommandsSubject,
} from '../contract/subjects.js';
import type { DeviceBroker } from './broker.js';
import type { GatewayMetrics } from './metrics.js';
import type { RegistryCache } from './registry/registry-cache.js';

/**
 * `commands.{tenant}.{deviceId}[.{path…}]` on NATS → `devices/{deviceId}/commands[/{path…}]` at QoS 1.
 * Every gateway receives every command and delivers it to the devices connected to it (or queued
 * in their persistent session). A request gets `{"delivered":true}` from the gateway that handed it
 * to a connected device; a request for a device connected nowhere gets no answer and times out.
 */
export function startDownlink(
  nc: NatsConnection,
  broker: DeviceBroker,
  registry: RegistryCache | undefined,
  metrics: GatewayMetrics,
  log: Logger,
): Subscription[] {
  const onCommand = (msg: Msg) => {
    const target = parseCommandsSubject(msg.subject);
    if (target === undefined) return;
    const known = registry
      ? registry.get(target.deviceId)?.tenant === target.tenant
      : target.tenant === DEFAULT_TENANT;
    if (!known) {
      metrics.downlink.labels('unknown_device').inc();
      if (msg.reply)
        msg.respond(JSON.stringify({ delivered: false, error: 'unknown device for this tenant' }));
      return;
    }
    const online = broker.isOnline(target.deviceId);
    broker.deliverCommand(target.deviceId, target.path, msg.data).then(
      () => {
        metrics.downlink.labels(online ? 'delivered' : 'not_connected_here').inc();
        if (online && msg.reply) msg.respond(JSON.stringify({ delivered: true }));
      },
      (err: Error) => {
        metrics.downlink.labels('error').inc();
        log.warn({ device: target.deviceId, err: err.message }, 'command not delivered');
      },
    );
  };
  const callback = (err: Error | null, msg: Msg) => (err ? undefined : onCommand(msg));
  return [
    nc.subscribe(COMMANDS_SUBSCRIPTION, { callback }),
    nc.subscribe(COMMANDS_SUBSCRIPTION_BARE, { callback }),
  ];
}
