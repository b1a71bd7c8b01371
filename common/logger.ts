import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. `password` and `secret` fields are redacted wherever they appear, so a
 * careless log call cannot leak a device credential.
 */
export function createLogger(name: string, level: string): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['password', 'secret', '*.password', '*.secret', 'secretHash', '*.secretHash'],
      censor: '[redacted]',
    },
  });
}
