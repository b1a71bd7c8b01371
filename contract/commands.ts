import { z } from 'zod';

/**
 * The answer to a command request on `commands.{tenant}.{deviceId}[.{path…}]`. Exactly one comes,
 * whichever gateway the device is on (see the README, Presence and downlink):
 *
 *   delivered       handed to a connection of the device that listens for its commands (QoS 1)
 *   queued          held in a persistent session of the device, which is away; delivered on its return
 *   backlogged      connected and subscribed, but its connection already holds all the gateway keeps
 *                   for it (MAX_UNSENT_BYTES_PER_CLIENT written and not yet sent, or, for a persistent
 *                   session, MAX_QUEUED_MESSAGES sent and not yet acknowledged): nothing was sent
 *   queue_full      the device is away and its session already holds MAX_QUEUED_MESSAGES: dropped
 *   not_subscribed  the device is connected but not subscribed to its commands: nothing was sent
 *   offline         connected to no gateway, and no session anywhere: nothing was sent
 *   unknown_device  the tenant has no such device
 *   refused         the command does not fit the device: a Sparkplug B metric write its birth in force
 *                   does not define, or of a value its datatype cannot hold (with `error`); nothing sent
 *
 * No answer (a timeout) only when a gateway that could hold the device did not say in time.
 */
export const COMMAND_STATUSES = [
  'delivered',
  'queued',
  'backlogged',
  'queue_full',
  'not_subscribed',
  'offline',
  'unknown_device',
  'refused',
] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export const CommandReply = z.object({
  /** True only for `delivered`; kept from before `status` existed. */
  delivered: z.boolean(),
  status: z.enum(COMMAND_STATUSES),
  error: z.string().optional(),
});
export type CommandReply = z.infer<typeof CommandReply>;

/**
 * Gateway to gateway: what one gateway did with a relayed command. Counts of its own connections
 * and sessions of the device; `known` is every gateway it has heard a heartbeat from, itself
 * included, so that whoever gathers the outcomes knows whom else to wait for.
 */
export const GatewayCommandOutcome = z.object({
  gateway: z.string(),
  delivered: z.int().nonnegative(),
  queued: z.int().nonnegative(),
  queueFull: z.int().nonnegative(),
  /** Connections refused it for their backlog; absent from gateways that predate it. */
  backlogged: z.int().nonnegative().default(0),
  connected: z.int().nonnegative(),
  known: z.array(z.string()),
  /** Why this gateway would not send it (a Sparkplug B write the birth does not allow); absent when sent. */
  refused: z.string().optional(),
});
export type GatewayCommandOutcome = z.infer<typeof GatewayCommandOutcome>;
