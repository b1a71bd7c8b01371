import type { z } from 'zod';
import { ConfigError, loadConfig } from './config.js';
import { ListenError } from './listen.js';
import { createLogger, type LogFormat, type Logger } from './logger.js';

/** Exit codes: 2 for configuration the operator must fix, 1 for anything else that stops a start. */
const EXIT_CONFIG = 2;
const EXIT_START_FAILED = 1;

/** An error whose message is already the one line an operator needs (config files, ports). */
type OperatorError = Error & { code: string };

/**
 * A start given up because a child process (a cluster worker) failed to start and has already said
 * why on stderr: the parent exits with the child's code and says nothing more.
 */
export class ChildStartError extends Error {
  readonly code = 'CHILD_START_FAILED';
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'ChildStartError';
  }
}

/**
 * Runs a service process: load and check its configuration (every problem listed, exit 2), start
 * it, and on SIGTERM or SIGINT close it (draining) and exit 0.
 */
export async function runService<S extends z.ZodObject>(
  name: string,
  schema: S,
  start: (config: Readonly<z.output<S>>, log: Logger) => Promise<{ close(): Promise<void> }>,
  operatorErrors: { new (...args: never[]): OperatorError }[] = [],
): Promise<void> {
  let config: Readonly<z.output<S>>;
  try {
    config = loadConfig(schema);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`${name}: ${err.message}`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
  const { LOG_LEVEL, LOG_FORMAT } = config as { LOG_LEVEL?: string; LOG_FORMAT?: LogFormat };
  const log = createLogger(name, LOG_LEVEL ?? 'info', undefined, LOG_FORMAT);
  let service: { close(): Promise<void> };
  try {
    service = await start(config, log);
  } catch (err) {
    if (err instanceof ChildStartError) process.exit(err.exitCode);
    if (err instanceof ListenError) {
      console.error(`${name}: ${err.message}`);
      process.exit(EXIT_START_FAILED);
    }
    if (operatorErrors.some((type) => err instanceof type)) {
      console.error(`${name}: ${(err as Error).message}`);
      process.exit(EXIT_CONFIG);
    }
    log.fatal({ err }, `${name} failed to start`);
    process.exit(EXIT_START_FAILED);
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping: draining what is in flight');
    service.close().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'unclean stop');
        process.exit(EXIT_START_FAILED);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
