import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { formatDuration, missingUnit, parseDuration } from './duration.js';
import { LOG_FORMATS } from './logger.js';

/**
 * Configuration: one zod schema per process whose keys are the environment variable names. An
 * optional JSON file (path in CONFIG_FILE) supplies the same keys; the environment wins over it.
 * Every problem is reported at once, then the result is frozen.
 */
export const CONFIG_FILE_VAR = 'CONFIG_FILE';

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Environment values are strings; these parse them with a message naming what was expected. */
export const env = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65_535).default(fallback),
  optionalPort: () => z.coerce.number().int().min(0).max(65_535).optional(),
  positiveInt: (fallback: number) => z.coerce.number().int().positive().default(fallback),
  nonNegativeInt: (fallback: number) => z.coerce.number().int().nonnegative().default(fallback),
  bool: (fallback: boolean) =>
    z
      .union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])])
      .default(fallback)
      .transform((v) => v === true || v === 'true' || v === '1' || v === 'yes'),
  /** `500ms`, `10s`, `1m` → milliseconds, at least `minMs`. */
  duration: (fallback: string, minMs = 1) =>
    z
      .string()
      .default(fallback)
      .transform((text, ctx) => {
        const ms = parseDuration(text);
        if (ms === undefined || ms < minMs) {
          ctx.addIssue({
            code: 'custom',
            message:
              missingUnit(text) ??
              `expected a duration of at least ${formatDuration(minMs)}, like 500ms, 10s, 1m`,
          });
          return z.NEVER;
        }
        return ms;
      }),
  logLevel: () => z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  logFormat: () => z.enum(LOG_FORMATS).default('auto'),
  natsUrl: () =>
    z
      .string()
      .default('nats://127.0.0.1:4222')
      .refine(
        (s) => s.split(',').every((u) => /^(nats|tls|ws|wss):\/\/[^\s]+$/.test(u.trim())),
        'expected nats://host:port (comma-separated for a cluster)',
      ),
};

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${CONFIG_FILE_VAR}: cannot read '${path}': ${(err as Error).message}`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([`${CONFIG_FILE_VAR}: '${path}' is not valid JSON: ${(err as Error).message}`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`${CONFIG_FILE_VAR}: '${path}' must hold a JSON object of VARIABLE: value`]);
  }
  return parsed as Record<string, unknown>;
}

function describe(issue: z.core.$ZodIssue, input: Record<string, unknown>): string {
  const key = issue.path.map(String).join('.') || '(config)';
  const given = issue.path.length > 0 ? input[String(issue.path[0])] : undefined;
  const shown = given === undefined ? '' : ` (got ${JSON.stringify(given)})`;
  return `${key}: ${issue.message}${shown}`;
}

export function loadConfig<S extends z.ZodObject>(
  schema: S,
  source: NodeJS.ProcessEnv | Record<string, string | undefined> = process.env,
): Readonly<z.output<S>> {
  const problems: string[] = [];
  const filePath = source[CONFIG_FILE_VAR];
  const fromFile = filePath ? readConfigFile(filePath) : {};
  const known = new Set(Object.keys(schema.shape));
  for (const key of Object.keys(fromFile)) {
    if (!known.has(key)) problems.push(`${key}: not a setting this process knows (in ${filePath})`);
  }
  const input: Record<string, unknown> = { ...fromFile };
  for (const key of known) {
    const value = source[key];
    // An empty variable is treated as unset, as shells and compose files often leave them.
    if (value !== undefined && value !== '') input[key] = value;
  }
  const result = schema.safeParse(input);
  if (!result.success) problems.push(...result.error.issues.map((i) => describe(i, input)));
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(result.data as z.output<S>);
}
