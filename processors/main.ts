import { ConfigError, loadConfig } from '../common/config.js';
import { ListenError } from '../common/listen.js';
import { createLogger } from '../common/logger.js';
import { type ProcessorConfig, ProcessorConfigSchema } from './config.js';
import { AlertRulesError } from './errors.js';
import { createProcessor } from './processor.js';

/** `npm run processors`: configuration from the environment (and CONFIG_FILE); SIGTERM drains. */
async function main(): Promise<void> {
  let config: ProcessorConfig;
  try {
    config = loadConfig(ProcessorConfigSchema);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`processors: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger('processors', config.LOG_LEVEL);
  let processor: Awaited<ReturnType<typeof createProcessor>>;
  try {
    processor = await createProcessor(config, log);
  } catch (err) {
    if (err instanceof ListenError || err instanceof AlertRulesError) {
      console.error(`processors: ${err.message}`);
      process.exit(err instanceof AlertRulesError ? 2 : 1);
    }
    log.fatal({ err }, 'processor failed to start');
    process.exit(1);
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping: writing and checkpointing what is in flight');
    processor.close().then(
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
