import { type DestinationStream, type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** `LOG_FORMAT`: JSON lines, readable one-line logs, or readable on a terminal and JSON otherwise. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** What `auto` becomes: readable on a terminal, JSON for whatever collects the logs otherwise. */
export function resolveLogFormat(
  format: LogFormat,
  isTTY = process.stdout.isTTY === true,
): 'json' | 'pretty' {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

/**
 * Logs on stdout: JSON lines, or with `format` pretty one line per entry (time, level, what, then its
 * fields), written synchronously like the JSON ones. `password`, `secret`, `token` and
 * `authorization` fields are redacted at the top level and one level down, so a careless log call
 * cannot leak a device credential or the operator token, in either format.
 */
export function createLogger(
  name: string,
  level: string,
  destination?: DestinationStream,
  format: LogFormat = 'json',
): Logger {
  const readable = resolveLogFormat(format) === 'pretty';
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
    readable
      ? pretty({
          destination: destination ?? 1,
          sync: true,
          colorize: destination === undefined && process.stdout.isTTY === true,
          singleLine: true,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname,name',
          messageFormat: '{name}: {msg}',
        })
      : destination,
  );
}
