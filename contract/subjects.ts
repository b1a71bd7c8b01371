/**
 * NATS side of the contract: subjects, streams, buckets. Every stage imports these; no other module
 * spells a subject.
 *
 *   telemetry.{partition}.{tenant}.{deviceId}   canonical events, stream TELEMETRY
 *   deadletter.{tenant}.{reason}                rejected input, stream DEADLETTER
 *   presence.{tenant}.{deviceId}                connect / disconnect / status, stream PRESENCE
 *   commands.{tenant}.{deviceId}[.{path…}]      downlink, core NATS (request/reply supported)
 *   windows.{tenant}                            device-window results for fleet rollups, stream WINDOWS
 *   gateways.heartbeat.{gatewayId}              gateway liveness, core NATS (GatewayHeartbeat)
 *   gateways.live.{gatewayId}                   what a gateway ingested, once a second, core NATS (GatewayLiveSummary)
 *   gateways.takeover                           a client id connected at a gateway, core NATS (ClientTakeover)
 *
 * The partition comes first so that a processor owning partition p filters `telemetry.p.>`; a device
 * always maps to one partition, and JetStream keeps the order of one publisher on one subject.
 */
export const TELEMETRY_STREAM = 'TELEMETRY';
export const DEADLETTER_STREAM = 'DEADLETTER';
export const PRESENCE_STREAM = 'PRESENCE';
/** Written by the processors (they own it): every emission of a device window, read by the fleet rollup. */
export const WINDOWS_STREAM = 'WINDOWS';

export const TELEMETRY_PREFIX = 'telemetry';
export const DEADLETTER_PREFIX = 'deadletter';
export const PRESENCE_PREFIX = 'presence';
export const COMMANDS_PREFIX = 'commands';
export const WINDOWS_PREFIX = 'windows';
export const GATEWAY_HEARTBEAT_PREFIX = 'gateways.heartbeat';
export const GATEWAY_LIVE_PREFIX = 'gateways.live';
/** Every gateway publishes and hears each connection it accepts here, to take a client id over. */
export const GATEWAY_TAKEOVER_SUBJECT = 'gateways.takeover';

export const TELEMETRY_SUBJECTS = `${TELEMETRY_PREFIX}.>`;
export const DEADLETTER_SUBJECTS = `${DEADLETTER_PREFIX}.>`;
export const PRESENCE_SUBJECTS = `${PRESENCE_PREFIX}.>`;
export const WINDOWS_SUBJECTS = `${WINDOWS_PREFIX}.>`;
export const GATEWAY_HEARTBEAT_SUBJECTS = `${GATEWAY_HEARTBEAT_PREFIX}.*`;
/** Every gateway's live view subscribes to this: the summaries of all gateways. */
export const GATEWAY_LIVE_SUBJECTS = `${GATEWAY_LIVE_PREFIX}.*`;
/** The gateway subscribes to this; extra tokens after the device id become topic levels. */
export const COMMANDS_SUBSCRIPTION = `${COMMANDS_PREFIX}.*.*.>`;
export const COMMANDS_SUBSCRIPTION_BARE = `${COMMANDS_PREFIX}.*.*`;
/** One gateway of this queue group takes each command: it relays it to all of them and answers. */
export const COMMANDS_QUEUE_GROUP = 'gateway-commands';
/**
 * Gateway to gateway, core NATS: a command relayed to every gateway (its subject in the
 * COMMAND_SUBJECT_HEADER header); each replies with what it did (GatewayCommandOutcome).
 */
export const GATEWAY_COMMANDS_RELAY_SUBJECT = 'gateways.commands';
export const COMMAND_SUBJECT_HEADER = 'Command-Subject';

/** KV bucket holding the device registry, keyed by device id. */
export const DEVICE_REGISTRY_BUCKET = 'devices';
/**
 * KV bucket where processor instances hold leases and heartbeats, one group of each per kind of work:
 * `partitions.lease.{p}` / `partitions.instance.{id}` for telemetry partitions, `roles.lease.{r}` /
 * `roles.instance.{id}` for the single-owner roles (fleet rollup, presence).
 */
export const PROCESSOR_LEASES_BUCKET = 'processor_leases';
/** KV bucket of per-partition checkpoints (`partition.{p}`): acknowledged sequence and device watermarks. */
export const PROCESSOR_CHECKPOINTS_BUCKET = 'processor_checkpoints';

/** KV bucket of device presence state, keyed `{tenant}.{deviceId}` (PresenceState), kept by the presence owner. */
export const PRESENCE_STATE_BUCKET = 'presence';

/**
 * Number of telemetry partitions. Part of the subject layout, so changing it is a data migration
 * (old events stay on their old partition subjects); processors share these partitions by lease.
 */
export const TELEMETRY_PARTITIONS = 16;

/** FNV-1a 32-bit: tiny, stable across languages, spreads short ids well enough for 16 buckets. */
export function partitionOf(tenant: string, deviceId: string, partitions = TELEMETRY_PARTITIONS): number {
  let hash = 0x811c9dc5;
  const key = `${tenant}/${deviceId}`;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % partitions;
}

export function telemetrySubject(tenant: string, deviceId: string): string {
  return `${TELEMETRY_PREFIX}.${partitionOf(tenant, deviceId)}.${tenant}.${deviceId}`;
}

/** Filter for one partition's events, as a processor owning that partition consumes them. */
export function telemetryPartitionFilter(partition: number): string {
  return `${TELEMETRY_PREFIX}.${partition}.>`;
}

export function deadletterSubject(tenant: string, reason: string): string {
  return `${DEADLETTER_PREFIX}.${tenant}.${reason}`;
}

export function presenceSubject(tenant: string, deviceId: string): string {
  return `${PRESENCE_PREFIX}.${tenant}.${deviceId}`;
}

export function commandsSubject(tenant: string, deviceId: string, path: readonly string[] = []): string {
  return [COMMANDS_PREFIX, tenant, deviceId, ...path].join('.');
}

export function parseCommandsSubject(
  subject: string,
): { tenant: string; deviceId: string; path: string[] } | undefined {
  const parts = subject.split('.');
  if (parts.length < 3 || parts[0] !== COMMANDS_PREFIX) return undefined;
  return { tenant: parts[1]!, deviceId: parts[2]!, path: parts.slice(3) };
}

export function windowsSubject(tenant: string): string {
  return `${WINDOWS_PREFIX}.${tenant}`;
}

export function gatewayHeartbeatSubject(gatewayId: string): string {
  return `${GATEWAY_HEARTBEAT_PREFIX}.${gatewayId}`;
}

export function gatewayLiveSubject(gatewayId: string): string {
  return `${GATEWAY_LIVE_PREFIX}.${gatewayId}`;
}

export function presenceStateKey(tenant: string, deviceId: string): string {
  return `${tenant}.${deviceId}`;
}
