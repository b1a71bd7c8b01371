import { z } from 'zod';
import { DEVICE_ID_PATTERN, LABEL_KEY_PATTERN, LABEL_VALUE_MAX_CHARS, TENANT_PATTERN } from './ids.js';

/**
 * One device, as stored under its id in the `devices` KV bucket (DEVICE_REGISTRY_BUCKET): written
 * by `npm run devices` and the simulator's provisioning, read by every gateway. `secretHash` is
 * gateway/registry/secrets.ts's scrypt hash; the plain secret is stored nowhere.
 */
export const DeviceRecord = z.object({
  id: z.string().regex(DEVICE_ID_PATTERN),
  tenant: z.string().regex(TENANT_PATTERN),
  secretHash: z.string(),
  labels: z.record(z.string().regex(LABEL_KEY_PATTERN), z.string().max(LABEL_VALUE_MAX_CHARS)),
  disabled: z.boolean(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
export type DeviceRecord = z.infer<typeof DeviceRecord>;
