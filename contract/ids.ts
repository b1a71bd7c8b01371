/**
 * Identifier grammar shared by every stage. Device ids and tenants become single NATS subject tokens
 * and single MQTT topic levels, so they must not contain `.`, `*`, `>`, `/`, `+`, `#` or whitespace.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const TENANT_PATTERN = /^[a-z0-9_-]{1,32}$/;
/** A gateway's id (its GATEWAY_ID): a presence connection is keyed by gateway and client id. */
export const GATEWAY_ID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
export const METRIC_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** Registry label keys become InfluxDB tag keys downstream; keep them boring. */
export const LABEL_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;
export const LABEL_VALUE_MAX_CHARS = 128;

/** Tenant used for every device when the gateway runs with AUTH_MODE=open. */
export const DEFAULT_TENANT = 'default';

/**
 * Names that match METRIC_NAME_PATTERN but would touch Object.prototype machinery if they were ever
 * used as plain-object keys; refused outright rather than trusted to careful code everywhere.
 */
const RESERVED_METRIC_NAMES: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * A client id names its device: the device id itself, or `{deviceId}:{anything}` for a device with
 * several connections (AUTH_MODE=registry refuses any other, so no device takes over another's session).
 */
export const CLIENT_ID_SEPARATOR = ':';

export function deviceOfClientId(clientId: string): string {
  const at = clientId.indexOf(CLIENT_ID_SEPARATOR);
  return at === -1 ? clientId : clientId.slice(0, at);
}

export function isDeviceId(value: string): boolean {
  return DEVICE_ID_PATTERN.test(value);
}

export function isTenant(value: string): boolean {
  return TENANT_PATTERN.test(value);
}

export function isGatewayId(value: string): boolean {
  return GATEWAY_ID_PATTERN.test(value);
}

export function isMetricName(value: string): boolean {
  return METRIC_NAME_PATTERN.test(value) && !RESERVED_METRIC_NAMES.has(value);
}
