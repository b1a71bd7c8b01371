import { z } from 'zod';
import { DEVICE_ID_PATTERN, LABEL_KEY_PATTERN, LABEL_VALUE_MAX_CHARS, TENANT_PATTERN } from './ids.js';

/** Children a gateway device may name in its record (`--children a,b,c`); `any` is bounded at run time. */
export const GATEWAY_MAX_LISTED_CHILDREN = 1_000;

/**
 * The label an auto-registered child carries: the gateway device it was first seen through. Such a
 * record has no secret (`secretHash` empty), so the child can never connect on its own.
 */
export const VIA_LABEL = 'via';

/**
 * A gateway device speaks for other devices of its tenant over its one connection (a site's
 * mosquitto bridged upstream): `any` device of the tenant (one seen first is registered with
 * `via={gateway}`), or only the devices listed.
 */
export const GatewayRole = z.object({
  children: z.union([
    z.literal('any'),
    z.array(z.string().regex(DEVICE_ID_PATTERN)).max(GATEWAY_MAX_LISTED_CHILDREN),
  ]),
});
export type GatewayRole = z.infer<typeof GatewayRole>;

/**
 * One device, as stored under its id in the `devices` KV bucket (DEVICE_REGISTRY_BUCKET): written
 * by `npm run devices` and the simulator's provisioning, read by every gateway. `secretHash` is
 * gateway/registry/secrets.ts's scrypt hash; the plain secret is stored nowhere. `gateway` is
 * optional, so records written before gateway devices existed stay valid.
 */
export const DeviceRecord = z.object({
  id: z.string().regex(DEVICE_ID_PATTERN),
  tenant: z.string().regex(TENANT_PATTERN),
  secretHash: z.string(),
  labels: z.record(z.string().regex(LABEL_KEY_PATTERN), z.string().max(LABEL_VALUE_MAX_CHARS)),
  disabled: z.boolean(),
  gateway: GatewayRole.optional(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
export type DeviceRecord = z.infer<typeof DeviceRecord>;

/**
 * Whether `gateway` may speak for `child` (its record): a device of the same tenant, enabled, not
 * the gateway device itself, and either listed in its `children` or, for `any`, registered through
 * it (`via={gateway}`). A device registered on its own (or through another gateway device) is not.
 */
export function isChildOf(
  child: DeviceRecord,
  gateway: Pick<DeviceRecord, 'id' | 'tenant' | 'gateway'>,
): boolean {
  const role = gateway.gateway;
  if (role === undefined || child.id === gateway.id || child.tenant !== gateway.tenant || child.disabled)
    return false;
  return role.children === 'any' ? child.labels[VIA_LABEL] === gateway.id : role.children.includes(child.id);
}
