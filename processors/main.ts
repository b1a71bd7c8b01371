import { runService } from '../common/service.js';
import { ProcessorConfigSchema } from './config.js';
import { AlertRulesError } from './errors.js';
import { createProcessor } from './processor.js';

/** `npm run processors`: configuration from the environment (and CONFIG_FILE); SIGTERM drains. */
await runService('processors', ProcessorConfigSchema, createProcessor, [AlertRulesError]);
