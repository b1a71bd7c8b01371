import { ConfigError, loadConfig } from '../common/config.js';
import { ListenError } from '../common/listen.js';
import { createLogger } from '../common/logger.js';
import { type GatewayConfig, GatewayConfigSchema } from './config.js';
import { createGateway } from './gateway.js';

/** `npm run gateway`: configuration from the environment (and CONFIG_FILE), SIGTERM drains. */
async function main(): Promise<void> {
  let config: GatewayConfig;
  try {
    config = loadConfig(GatewayConfigSchema);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`gateway: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger('gateway', config.LOG_LEVEL);
  let gateway: Awaited<ReturnType<typeof createGateway>>;
  try {
    gateway = await createGateway(config, log);
  } catch (err) {
    if (err instanceof ListenError) {
      console.error(`gateway: ${err.message}`);
      process.exit(1);
    }
    log.fatal({ err }, 'gateway failed to start');
    process.exit(1);
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping: draining in-flight publishes');
    gateway.close().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'unclean stop');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

await main();
