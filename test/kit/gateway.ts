import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { loadConfig } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
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
  return { gateway, config };
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
): Promise<ProvisionedDevice> {
  const registry = await DeviceRegistry.open(nc);
  const { secret } = await registry.add({ id, tenant, labels });
  return { id, tenant, secret };
}
