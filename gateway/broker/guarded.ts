import type { Logger } from '../../common/logger.js';

/**
 * Runs a hook's body; if it throws (a bug), that one connection is closed through `done`, unacknowledged,
 * never the process: aedes would let the exception out of its handler.
 */
export function guarded(
  log: Logger,
  clientId: string | undefined,
  hook: () => void,
  done: (err: Error) => void,
): void {
  try {
    hook();
  } catch (err) {
    log.error({ err, clientId }, 'broker hook threw (a bug): closing the connection, no ack');
    done(err as Error);
  }
}
