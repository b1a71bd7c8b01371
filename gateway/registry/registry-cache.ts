import type { KV } from '@nats-io/kv';
import type { Logger } from '../../common/logger.js';
import { type DeviceRecord, VIA_LABEL } from '../../contract/devices.js';
import { decodeRecord } from './device-registry.js';

export type RegistryChange = (
  id: string,
  record: DeviceRecord | undefined,
  previous: DeviceRecord | undefined,
) => void;

/**
 * The gateway's in-memory view of the registry, kept current by a KV watch: a device added,
 * disabled, rotated or removed takes effect on every running gateway without a restart.
 */
export class RegistryCache {
  private readonly devices = new Map<string, DeviceRecord>();
  /** How many devices carry each `via` label: the children registered through each gateway device. */
  private readonly viaCounts = new Map<string, number>();
  private stopWatch: (() => void) | undefined;
  private applied = 0;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
    private readonly onChange: RegistryChange,
  ) {}

  get size(): number {
    return this.devices.size;
  }

  /** The registry revision of the newest change applied. */
  get revision(): number {
    return this.applied;
  }

  get(id: string): DeviceRecord | undefined {
    return this.devices.get(id);
  }

  /** Devices registered through this gateway device (label `via={gatewayId}`), all gateways' doing. */
  childrenVia(gatewayId: string): number {
    return this.viaCounts.get(gatewayId) ?? 0;
  }

  /**
   * A record this gateway has just created, taken in before its watch brings it: the next publish
   * for the same child must not try to register it again. The watch then writes the same record.
   */
  created(record: DeviceRecord): void {
    if (!this.devices.has(record.id)) this.set(record.id, record);
  }

  private set(id: string, record: DeviceRecord | undefined): void {
    this.countVia(this.devices.get(id), -1);
    if (record) this.devices.set(id, record);
    else this.devices.delete(id);
    this.countVia(record, 1);
  }

  private countVia(record: DeviceRecord | undefined, by: 1 | -1): void {
    const via = record?.labels[VIA_LABEL];
    if (via === undefined) return;
    const n = (this.viaCounts.get(via) ?? 0) + by;
    if (n > 0) this.viaCounts.set(via, n);
    else this.viaCounts.delete(via);
  }

  /** Resolves once the current contents are loaded; changes keep arriving afterwards. */
  async start(): Promise<void> {
    const watcher = await this.kv.watch();
    this.stopWatch = () => watcher.stop();
    let markLoaded: () => void = () => {};
    const loaded = new Promise<void>((resolve) => {
      markLoaded = resolve;
    });
    // The last initial entry arrives with delta 0 (nothing more pending); an empty bucket sends none.
    if ((await this.kv.status()).values === 0) markLoaded();
    void (async () => {
      for await (const entry of watcher) {
        const previous = this.devices.get(entry.key);
        const record = decodeRecord(entry);
        this.set(entry.key, record);
        if (entry.operation === 'PUT' && !record) {
          this.log.error({ device: entry.key }, 'registry entry does not parse: device treated as unknown');
        }
        if (previous !== undefined || record !== undefined) this.onChange(entry.key, record, previous);
        this.applied = entry.revision;
        if (entry.delta === 0) markLoaded();
      }
    })();
    await loaded;
  }

  stop(): void {
    this.stopWatch?.();
  }
}
