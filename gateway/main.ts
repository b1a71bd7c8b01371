import { runService } from '../common/service.js';
import { GatewayConfigSchema } from './config.js';
import { createGateway } from './gateway.js';

/** `npm run gateway`: configuration from the environment (and CONFIG_FILE); SIGTERM drains. */
await runService('gateway', GatewayConfigSchema, createGateway);
