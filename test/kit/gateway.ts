import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import type { GatewayRole } from '../../contract/devices.js';
import { type GatewayConfig, GatewayConfigSchema } from '../../gateway/config.js';
import { createGateway, type Gateway } from '../../gateway/gateway.js';
import { DeviceRegistry } from '../../gateway/registry/device-registry.js';

/** A gateway in this process on ephemeral ports, configured through the same schema as production. */
export async function startGateway(
  natsUrl: string,
  overrides: Record<string, string> = {},
): Promise<{ gateway: Gateway; config: GatewayConfig }> {
  const config = loadConfig(GatewayConfigSchema, {
    NATS_URL: natsUrl,
    MQTT_PORT: '0',
    MQTT_WS_PORT: '0',
    HTTP_PORT: '0',
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    SHUTDOWN_GRACE_MS: '2000',
    ...overrides,
  });
  const gateway = await createGateway(config, createLogger('gateway', config.LOG_LEVEL));
  const close = gateway.close.bind(gateway);
  running.add({ gateway, natsUrl });
  gateway.close = () => {
    for (const r of running) if (r.gateway === gateway) running.delete(r);
    return close();
  };
  return { gateway, config };
}

/** Gateways this test file started and has not closed: `provision` waits until they know a device. */
const running = new Set<{ gateway: Gateway; natsUrl: string }>();

async function appliedRevision(gateway: Gateway): Promise<number> {
  const metric = gateway.metrics.registry.getSingleMetric('gateway_registry_revision');
  return (await metric?.get())?.values[0]?.value ?? 0;
}

export async function natsClient(url: string): Promise<NatsConnection> {
  return connect({ servers: url, name: 'test' });
}

export interface ProvisionedDevice {
  id: string;
  tenant: string;
  secret: string;
}

export async function provision(
  nc: NatsConnection,
  id: string,
  tenant = 'acme',
  labels: Record<string, string> = {},
  /** A gateway device's role (`npm run devices -- add … --gateway` or `--children`). */
  gateway?: GatewayRole,
): Promise<ProvisionedDevice> {
  const registry = await DeviceRegistry.open(nc);
  const { secret, revision } = await registry.add({ id, tenant, labels, ...(gateway ? { gateway } : {}) });
  // A gateway learns of new devices through its registry watch; a test connecting right away must
  // not race it (a real device added by the CLI a moment before connecting may, and is refused).
  const server = nc.getServer();
  const deadline = Date.now() + 5_000;
  for (const { gateway, natsUrl } of running) {
    if (!natsUrl.endsWith(server)) continue;
    while ((await appliedRevision(gateway)) < revision) {
      if (Date.now() > deadline)
        throw new Error(`gateway ${gateway.id} has not seen device ${id} within 5 s`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return { id, tenant, secret };
}
