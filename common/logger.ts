import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. `password`, `secret`, `token` and `authorization` fields are redacted at the top
 * level and one level down, so a careless log call cannot leak a device credential or the operator token.
 */
export function createLogger(name: string, level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['password', 'secret', 'secretHash', 'token', 'authorization'].flatMap((key) => [
          key,
          `*.${key}`,
        ]),
        censor: '[redacted]',
      },
    },
    destination,
  );
}
