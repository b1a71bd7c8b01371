import type { Logger } from '../../common/logger.js';
import { type DeviceRecord, isChildOf } from '../../contract/devices.js';
import type { RejectionReason } from '../../contract/rejections.js';
import { type DeviceIdentity, deviceIdentity } from '../ingest/telemetry-handler.js';
import type { GatewayMetrics } from '../metrics.js';
import { RegistryError } from '../registry/device-registry.js';
import type { RegistryCache } from '../registry/registry-cache.js';

/** Whether a gateway device may publish for a device: the child's identity, or the dead-letter reason. */
export type ChildVerdict =
  | { ok: true; identity: DeviceIdentity }
  | { ok: false; reason: Extract<RejectionReason, 'CHILD_DENIED' | 'CHILD_LIMIT'> };

export interface GatewayChildrenDeps {
  registry: Pick<RegistryCache, 'get' | 'childrenVia' | 'created'>;
  /** Creates a child's record if absent (DeviceRegistry.addChild); RegistryError DEVICE_EXISTS if not. */
  register(id: string, tenant: string, via: string): Promise<DeviceRecord>;
  /** Reads a record from the registry bucket itself (the watch may not have brought it yet). */
  lookup(id: string): Promise<DeviceRecord | undefined>;
  /** GATEWAY_DEVICE_MAX_CHILDREN. */
  maxChildren: number;
  metrics: Pick<GatewayMetrics, 'limitReached'>;
  log: Logger;
}

const DENIED: ChildVerdict = { ok: false, reason: 'CHILD_DENIED' };
const LIMIT: ChildVerdict = { ok: false, reason: 'CHILD_LIMIT' };

/**
 * Which devices a gateway device speaks for (README, Gateway devices). A child already in the registry
 * is decided at once (contract/devices.ts isChildOf); one not yet there is registered through the
 * gateway device that first publishes for it (`via={gateway}`, no secret), create-if-absent so that
 * two gateways racing for it agree on one record; each gateway device with `--gateway` (any device of
 * its tenant) gets at most GATEWAY_DEVICE_MAX_CHILDREN registered so.
 */
export class GatewayChildren {
  /** Registrations in flight, by child id; the same new child published twice is registered once. */
  private readonly pending = new Map<string, { via: string; record: Promise<DeviceRecord | undefined> }>();
  /** A child's identity, made once per record version. */
  private readonly identities = new WeakMap<DeviceRecord, DeviceIdentity>();
  /** Gateway devices already warned of as having reached GATEWAY_DEVICE_MAX_CHILDREN. */
  private readonly warned = new Set<string>();

  constructor(private readonly deps: GatewayChildrenDeps) {}

  /** Decides at once when the registry knows the child, else once it is registered. */
  resolve(gateway: DeviceIdentity, childId: string): ChildVerdict | Promise<ChildVerdict> {
    const record = this.deps.registry.get(childId);
    if (record !== undefined) return this.verdict(gateway, record);
    const role = gateway.gateway;
    if (role === undefined || childId === gateway.deviceId) return DENIED;
    if (role.children !== 'any' && !role.children.includes(childId)) return DENIED;
    let pending = this.pending.get(childId);
    if (pending === undefined) {
      if (role.children === 'any' && this.registeredVia(gateway.deviceId) >= this.deps.maxChildren)
        return this.limitReached(gateway);
      pending = { via: gateway.deviceId, record: this.register(gateway, childId) };
      this.pending.set(childId, pending);
      const settled = pending;
      void settled.record.then(
        () => this.pending.delete(childId),
        () => this.pending.delete(childId),
      );
    }
    return pending.record.then((r) => (r === undefined ? DENIED : this.verdict(gateway, r)));
  }

  /** Whether a device is, as the registry has it now, a gateway device. */
  isGateway(deviceId: string): boolean {
    return this.deps.registry.get(deviceId)?.gateway !== undefined;
  }

  /**
   * Whether a gateway device speaks for a registered child, as the registry has both now: what its
   * connection may subscribe to and be sent (downlink), which registers nobody.
   */
  speaksFor(gatewayId: string, childId: string): boolean {
    const gateway = this.deps.registry.get(gatewayId);
    const child = this.deps.registry.get(childId);
    return gateway !== undefined && child !== undefined && isChildOf(child, gateway);
  }

  /** Children registered through a gateway device, those being registered included. */
  private registeredVia(gatewayId: string): number {
    let inFlight = 0;
    for (const p of this.pending.values()) if (p.via === gatewayId) inFlight++;
    return this.deps.registry.childrenVia(gatewayId) + inFlight;
  }

  private verdict(gateway: DeviceIdentity, record: DeviceRecord): ChildVerdict {
    if (!isChildOf(record, { id: gateway.deviceId, tenant: gateway.tenant, gateway: gateway.gateway }))
      return DENIED;
    let identity = this.identities.get(record);
    if (identity === undefined) {
      identity = deviceIdentity(record.id, record.tenant, record.labels);
      this.identities.set(record, identity);
    }
    return { ok: true, identity };
  }

  private limitReached(gateway: DeviceIdentity): ChildVerdict {
    this.deps.metrics.limitReached('GATEWAY_DEVICE_MAX_CHILDREN');
    if (!this.warned.has(gateway.deviceId)) {
      this.warned.add(gateway.deviceId);
      this.deps.log.warn(
        { device: gateway.deviceId, limit: this.deps.maxChildren },
        'gateway device has registered its bound of children: readings for new ones are dead-lettered',
      );
    }
    return LIMIT;
  }

  private async register(gateway: DeviceIdentity, childId: string): Promise<DeviceRecord | undefined> {
    const { registry, log } = this.deps;
    let record: DeviceRecord | undefined;
    try {
      record = await this.deps.register(childId, gateway.tenant, gateway.deviceId);
      log.info({ device: childId, via: gateway.deviceId }, 'child of a gateway device registered');
    } catch (err) {
      if (!(err instanceof RegistryError && err.code === 'DEVICE_EXISTS')) throw err;
      // Another gateway (or an administrator) was first: its record decides.
      record = await this.deps.lookup(childId);
    }
    if (record !== undefined) registry.created(record);
    return record;
  }
}
