import cluster from 'node:cluster';
import { runService } from '../common/service.js';
import { GatewayConfigSchema } from './config.js';
import { createGateway } from './gateway.js';
import { startPrimary } from './workers/primary.js';
import { startWorker } from './workers/worker.js';

/**
 * `npm run gateway`: configuration from the environment (and CONFIG_FILE); SIGTERM drains.
 * GATEWAY_WORKERS=1 is one process; above it, this one checks the configuration, holds the HTTP port
 * and forks that many workers, each a gateway sharing the MQTT ports (gateway/workers/).
 */
await runService('gateway', GatewayConfigSchema, (config, log) =>
  cluster.isWorker
    ? startWorker(config, log)
    : config.GATEWAY_WORKERS === 1
      ? createGateway(config, log)
      : startPrimary(config, log),
);
