import { type KV, type KvEntry, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { DeviceRecord, type GatewayRole, VIA_LABEL } from '../../contract/devices.js';
import { DEVICE_REGISTRY_BUCKET } from '../../contract/subjects.js';
import { generateSecret, hashSecret } from './secrets.js';

export class RegistryError extends Error {
  constructor(
    readonly code: 'DEVICE_EXISTS' | 'DEVICE_NOT_FOUND' | 'DEVICE_INVALID' | 'CONCURRENT_UPDATE',
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

export interface NewDevice {
  id: string;
  tenant: string;
  secret?: string;
  labels?: Record<string, string>;
  /** A gateway device: which devices of its tenant it may speak for. */
  gateway?: GatewayRole;
}

export function openRegistryBucket(nc: NatsConnection, replicas = 1): Promise<KV> {
  // create() opens the bucket when it already exists with a compatible config.
  return new Kvm(nc).create(DEVICE_REGISTRY_BUCKET, { history: 1, replicas });
}

export function decodeRecord(entry: KvEntry): DeviceRecord | undefined {
  if (entry.operation !== 'PUT') return undefined;
  const parsed = DeviceRecord.safeParse(entry.json());
  return parsed.success ? parsed.data : undefined;
}

/** Administrative operations on the registry: what `npm run devices` does. */
export class DeviceRegistry {
  constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection): Promise<DeviceRegistry> {
    return new DeviceRegistry(await openRegistryBucket(nc));
  }

  /**
   * Creates a device; returns the record, the plain secret (stored nowhere) and the registry
   * revision that created it (gateways that have applied it report it in gateway_registry_revision).
   */
  async add(device: NewDevice): Promise<{ record: DeviceRecord; secret: string; revision: number }> {
    const secret = device.secret ?? generateSecret();
    const now = new Date().toISOString();
    const candidate = {
      id: device.id,
      tenant: device.tenant,
      secretHash: await hashSecret(secret),
      labels: device.labels ?? {},
      disabled: false,
      ...(device.gateway ? { gateway: device.gateway } : {}),
      createdAt: now,
      updatedAt: now,
    };
    const parsed = DeviceRecord.safeParse(candidate);
    if (!parsed.success) {
      throw new RegistryError(
        'DEVICE_INVALID',
        parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      );
    }
    let revision: number;
    try {
      revision = await this.kv.create(device.id, JSON.stringify(parsed.data));
    } catch (err) {
      if (await this.get(device.id))
        throw new RegistryError('DEVICE_EXISTS', `device '${device.id}' already exists`);
      throw err;
    }
    return { record: parsed.data, secret, revision };
  }

  /**
   * Registers a child first seen through a gateway device: its tenant, the label `via={gateway}`, and
   * no secret (an empty hash verifies nothing), so it can never connect on its own. Create-if-absent:
   * of two gateways registering the same id at once one wins, the other gets DEVICE_EXISTS.
   */
  async addChild(id: string, tenant: string, via: string): Promise<DeviceRecord> {
    const now = new Date().toISOString();
    const parsed = DeviceRecord.safeParse({
      id,
      tenant,
      secretHash: '',
      labels: { [VIA_LABEL]: via },
      disabled: false,
      createdAt: now,
      updatedAt: now,
    });
    if (!parsed.success) throw new RegistryError('DEVICE_INVALID', parsed.error.issues[0]!.message);
    try {
      await this.kv.create(id, JSON.stringify(parsed.data));
    } catch (err) {
      if (await this.get(id)) throw new RegistryError('DEVICE_EXISTS', `device '${id}' already exists`);
      throw err;
    }
    return parsed.data;
  }

  async get(id: string): Promise<DeviceRecord | undefined> {
    const entry = await this.kv.get(id);
    return entry ? decodeRecord(entry) : undefined;
  }

  async list(): Promise<DeviceRecord[]> {
    const records: DeviceRecord[] = [];
    for await (const key of await this.kv.keys()) {
      const record = await this.get(key);
      if (record) records.push(record);
    }
    return records.sort((a, b) => a.id.localeCompare(b.id));
  }

  setDisabled(id: string, disabled: boolean): Promise<DeviceRecord> {
    return this.update(id, async (r) => ({ ...r, disabled }));
  }

  async rotate(id: string, secret = generateSecret()): Promise<{ record: DeviceRecord; secret: string }> {
    const secretHash = await hashSecret(secret);
    const record = await this.update(id, async (r) => ({ ...r, secretHash }));
    return { record, secret };
  }

  async remove(id: string): Promise<void> {
    if (!(await this.get(id))) throw new RegistryError('DEVICE_NOT_FOUND', `no device '${id}'`);
    await this.kv.delete(id);
  }

  /** Compare-and-set on the entry's revision, so two admins cannot overwrite each other silently. */
  private async update(
    id: string,
    change: (r: DeviceRecord) => Promise<DeviceRecord>,
  ): Promise<DeviceRecord> {
    const entry = await this.kv.get(id);
    const current = entry ? decodeRecord(entry) : undefined;
    if (!entry || !current) throw new RegistryError('DEVICE_NOT_FOUND', `no device '${id}'`);
    const next = { ...(await change(current)), updatedAt: new Date().toISOString() };
    try {
      await this.kv.update(id, JSON.stringify(next), entry.revision);
    } catch {
      throw new RegistryError('CONCURRENT_UPDATE', `device '${id}' changed meanwhile; try again`);
    }
    return next;
  }
}
