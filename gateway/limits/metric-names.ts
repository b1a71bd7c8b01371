/**
 * Distinct metric names per device and per tenant. Every name becomes series in the TSDB (a field of
 * `telemetry`, a `metric` tag of each aggregate window), so a device inventing names would create
 * series without end: one that sent 50,000 names in 4 s made two million. A reading that names a
 * metric new to its device past `perDevice` names, or new to its tenant past `perTenant`, is refused
 * whole (dead letter METRIC_LIMIT); the names a device already uses always pass.
 *
 * A device silent for `ttlMs` is forgotten, and its names stop counting for its tenant unless another
 * device uses them too. Kept per gateway process: behind several gateways a device could reach the
 * cap on each. Pure apart from the clock.
 */
export interface MetricNamesOptions {
  perDevice: number;
  perTenant: number;
  ttlMs: number;
  now?: () => number;
}

export type MetricLimit = 'device' | 'tenant';

interface DeviceNames {
  tenant: string;
  names: Set<string>;
  lastMs: number;
}

export class MetricNames {
  private readonly devices = new Map<string, DeviceNames>();
  /** Per tenant, each name with the number of tracked devices using it. */
  private readonly tenants = new Map<string, Map<string, number>>();
  private readonly now: () => number;

  constructor(private readonly o: MetricNamesOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Devices tracked now. */
  get size(): number {
    return this.devices.size;
  }

  /** Admits a reading's metric names, or says which limit it would pass (and admits none of them). */
  admit(tenant: string, deviceId: string, metrics: readonly { name: string }[]): MetricLimit | undefined {
    const key = `${tenant}/${deviceId}`;
    let device = this.devices.get(key);
    if (device === undefined) {
      device = { tenant, names: new Set(), lastMs: 0 };
      this.devices.set(key, device);
    }
    device.lastMs = this.now();
    let fresh: string[] | undefined;
    for (const { name } of metrics) {
      if (device.names.has(name)) continue;
      fresh ??= [];
      fresh.push(name);
    }
    if (fresh === undefined) return undefined;
    if (device.names.size + fresh.length > this.o.perDevice) return 'device';
    let inTenant = this.tenants.get(tenant);
    if (inTenant === undefined) {
      inTenant = new Map();
      this.tenants.set(tenant, inTenant);
    }
    let newToTenant = 0;
    for (const name of fresh) if (!inTenant.has(name)) newToTenant++;
    if (inTenant.size + newToTenant > this.o.perTenant) return 'tenant';
    for (const name of fresh) {
      device.names.add(name);
      inTenant.set(name, (inTenant.get(name) ?? 0) + 1);
    }
    return undefined;
  }

  /** Forgets devices silent for longer than the TTL, and the names no tracked device uses any more. */
  sweep(): void {
    const cutoff = this.now() - this.o.ttlMs;
    for (const [key, device] of this.devices) {
      if (device.lastMs > cutoff) continue;
      this.devices.delete(key);
      const inTenant = this.tenants.get(device.tenant);
      if (inTenant === undefined) continue;
      for (const name of device.names) {
        const users = (inTenant.get(name) ?? 1) - 1;
        if (users > 0) inTenant.set(name, users);
        else inTenant.delete(name);
      }
      if (inTenant.size === 0) this.tenants.delete(device.tenant);
    }
  }
}
