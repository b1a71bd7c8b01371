import { randomBytes, randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { missingUnit, parseDuration } from '../common/duration.js';
import { DEFAULT_TENANT, isDeviceId, TENANT_PATTERN } from '../contract/ids.js';
import {
  type Encoding,
  EPISODE_EVERY_MS,
  type FaultMix,
  NAP_MS,
  OVERHEAT_DEGREES,
  OVERHEAT_MS,
  type Schema,
} from './device-script.js';
import { SimConfigError } from './errors.js';
import type { ProgressMode } from './progress.js';
import { DEVICE_TYPES, type DeviceType } from './signals.js';

/**
 * Options of `simulate` and `simulate verify`, from the command line or from code (runSimulation,
 * verifyLedger). One schema per command; every problem is listed at once, then the result is frozen.
 */
export const DEFAULT_DEVICES = 100;
export const DEFAULT_RATE_PER_S = 1;
export const DEFAULT_DURATION_MS = 60_000;
export const DEFAULT_MQTT_URL = 'mqtt://127.0.0.1:1883';
export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
/** Publishes a device may have unacknowledged at once; beyond it, they wait in its queue. */
export const DEFAULT_INFLIGHT = 16;
/** CONNECTs outstanding at once: the gateway checks each new device's secret with scrypt (~50 ms). */
export const DEFAULT_CONNECT_CONCURRENCY = 64;
export const DEFAULT_SITES = 4;
export const DEFAULT_DRAIN_TIMEOUT_MS = 15_000;
export const DEFAULT_VERIFY_WAIT_MS = 30_000;
export const DEFAULT_VERIFY_ROWS = 20;
/** A device samples at most once a millisecond: event times are milliseconds and must differ. */
const MAX_SAMPLES_PER_S = 1_000;
/**
 * Late and out-of-order readings are at most 4 s behind the device's newest only if a device
 * publishes at least every 2 s (out of order delays a publish by one period, plus its batch).
 */
const MAX_FAULTY_PUBLISH_PERIOD_MS = 2_000;
/** Device ids are `{runId}-{index}` and at most 64 characters. */
const MAX_RUN_ID_CHARS = 32;

export interface RunOptions {
  devices: number;
  /** Publishes per second per device. */
  rate: number;
  durationMs: number | undefined;
  /** Publishes of the whole fleet (regular ones, faults come on top); split evenly over the devices. */
  messages: number | undefined;
  qos: 0 | 1 | 2;
  batch: number;
  url: string;
  natsUrl: string;
  auth: 'registry' | 'open';
  /** Names the run's devices (`{runId}-{n}`) and is the tenant in registry mode. */
  runId: string;
  tenant: string;
  seed: number;
  schema: Schema;
  encoding: Encoding;
  faults: FaultMix;
  ledger: string | undefined;
  inflight: number;
  connectConcurrency: number;
  keepDevices: boolean;
  types: readonly DeviceType[];
  sites: number;
  progress: ProgressMode | 'auto';
  drainTimeoutMs: number;
  json: boolean;
}

/** What code may pass to runSimulation: any option, as its CLI string or as a value. */
export type RunInput = Partial<{
  devices: number | string;
  rate: number | string;
  totalRate: number | string;
  /** Milliseconds, or a duration string (`30s`). */
  duration: number | string;
  messages: number | string;
  qos: number | string;
  batch: number | string;
  url: string;
  nats: string;
  auth: string;
  tenant: string;
  seed: number | string;
  schema: string;
  encoding: string;
  invalid: number | string;
  duplicates: number | string;
  late: number | string;
  outOfOrder: number | string;
  fahrenheit: number | string;
  churn: number | string;
  offline: number | string;
  overheat: number | string;
  naps: number | string;
  ledger: string;
  inflight: number | string;
  connectConcurrency: number | string;
  keepDevices: boolean;
  types: string | readonly string[];
  sites: number | string;
  progress: string;
  drainTimeout: number | string;
  json: boolean;
}>;

export interface VerifyOptions {
  ledger: string;
  tsdb: 'auto' | 'victoria' | 'influx';
  waitMs: number;
  natsUrl: string;
  /** Check DEADLETTER for the ledger's invalid messages. */
  deadLetters: boolean;
  rows: number;
  json: boolean;
  influx: { url: string; token: string; org: string; bucket: string };
}

export type VerifyInput = Partial<{
  ledger: string;
  tsdb: string;
  wait: number | string;
  nats: string;
  deadLetters: boolean;
  rows: number | string;
  json: boolean;
  influxUrl: string;
  influxToken: string;
  influxOrg: string;
  influxBucket: string;
}>;

const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v : parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: missingUnit(String(v)) ?? 'expected a duration like 500ms, 30s, 5m',
    });
    return z.NEVER;
  }
  return ms;
});

const percent = z.coerce.number().min(0, 'a percentage, 0–100').max(100, 'a percentage, 0–100').default(0);
const positiveInt = (max: number) => z.coerce.number().int().positive().max(max);
const urlOf = (protocols: RegExp, example: string) =>
  z.string().refine((s) => {
    try {
      return protocols.test(new URL(s).protocol);
    } catch {
      return false;
    }
  }, `expected a URL like ${example}`);

const RunFields = {
  devices: positiveInt(100_000).default(DEFAULT_DEVICES),
  rate: z.coerce.number().positive().optional(),
  totalRate: z.coerce.number().positive().optional(),
  duration: duration.optional(),
  messages: positiveInt(1e12).optional(),
  qos: z.coerce
    .number()
    .pipe(z.union([z.literal(0), z.literal(1), z.literal(2)]))
    .default(1),
  batch: positiveInt(256).default(1),
  url: urlOf(/^(mqtts?|tcp|tls|wss?):$/, DEFAULT_MQTT_URL).optional(),
  nats: z
    .string()
    .refine((s) => s.split(',').every((u) => /^(nats|tls|ws|wss):\/\/[^\s]+$/.test(u.trim())), {
      message: 'expected nats://host:port (comma-separated for a cluster)',
    })
    .optional(),
  auth: z.enum(['registry', 'open']).optional(),
  tenant: z.string().regex(TENANT_PATTERN, 'lowercase letters, digits, _ and -, at most 32').optional(),
  seed: z.coerce
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  schema: z.enum(['v1', 'v2', 'mixed']).default('mixed'),
  encoding: z.enum(['json', 'cbor', 'mixed']).default('json'),
  invalid: percent,
  duplicates: percent,
  late: percent,
  outOfOrder: percent,
  fahrenheit: percent,
  churn: percent,
  offline: percent,
  overheat: percent,
  naps: percent,
  ledger: z.string().min(1).optional(),
  inflight: positiveInt(65_535).default(DEFAULT_INFLIGHT),
  connectConcurrency: positiveInt(10_000).default(DEFAULT_CONNECT_CONCURRENCY),
  keepDevices: z.boolean().default(false),
  types: z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()) : [...v]))
    .pipe(z.array(z.enum(DEVICE_TYPES)).min(1))
    .default([...DEVICE_TYPES]),
  sites: positiveInt(1_000).default(DEFAULT_SITES),
  progress: z.enum(['auto', 'tty', 'plain', 'none']).default('auto'),
  drainTimeout: duration.default(DEFAULT_DRAIN_TIMEOUT_MS),
  json: z.boolean().default(false),
} satisfies Record<keyof RunInput, z.ZodType>;

const VerifyFields = {
  ledger: z.string({ error: 'required: the ledger file a run wrote' }).min(1),
  tsdb: z.enum(['auto', 'victoria', 'influx']).default('auto'),
  wait: duration.default(DEFAULT_VERIFY_WAIT_MS),
  nats: RunFields.nats,
  deadLetters: z.boolean().default(true),
  rows: positiveInt(100_000).default(DEFAULT_VERIFY_ROWS),
  json: z.boolean().default(false),
  influxUrl: urlOf(/^https?:$/, 'http://127.0.0.1:8086').default('http://127.0.0.1:8086'),
  influxToken: z.string().default(''),
  influxOrg: z.string().min(1).default('iot'),
  influxBucket: z.string().min(1).default('telemetry'),
} satisfies Record<keyof VerifyInput, z.ZodType>;

/** `outOfOrder` → `--out-of-order`: problems name the option as it is typed. */
export function flagOf(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

function camelOf(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

type Parsed<F extends Record<string, z.ZodType>> = { [K in keyof F]: z.output<F[K]> };

/** Each field on its own, so that one bad option does not hide the others. */
function parseFields<F extends Record<string, z.ZodType>>(
  fields: F,
  input: Record<string, unknown>,
  problems: string[],
  nameOf: (key: string) => string,
): Parsed<F> {
  const out: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(fields)) {
    const value = input[key];
    const result = schema.safeParse(value === '' ? undefined : value);
    if (result.success) out[key] = result.data;
    else {
      const shown = value === undefined ? '' : ` (got ${JSON.stringify(value)})`;
      problems.push(`${nameOf(key)}: ${result.error.issues[0]!.message}${shown}`);
    }
  }
  for (const key of Object.keys(input)) {
    if (!(key in fields) && input[key] !== undefined) problems.push(`${nameOf(key)}: not an option`);
  }
  return out as Parsed<F>;
}

export interface Environment {
  NATS_URL?: string;
  AUTH_MODE?: string;
  MQTT_URL?: string;
  MQTT_PORT?: string;
  INFLUX_URL?: string;
  INFLUX_TOKEN?: string;
  INFLUX_ORG?: string;
  INFLUX_BUCKET?: string;
}

/** Run options from code or CLI values; the environment supplies NATS_URL, AUTH_MODE and MQTT_URL. */
export function resolveRunOptions(
  input: RunInput,
  environment: Environment = process.env,
  nameOf: (key: string) => string = flagOf,
): Readonly<RunOptions> {
  const problems: string[] = [];
  const envAuth = environment.AUTH_MODE === '' ? undefined : environment.AUTH_MODE;
  const o = parseFields(RunFields, { ...input }, problems, nameOf);
  if (envAuth !== undefined && input.auth === undefined && envAuth !== 'registry' && envAuth !== 'open')
    problems.push(`AUTH_MODE: expected registry or open (got ${JSON.stringify(envAuth)})`);
  const auth = o.auth ?? (envAuth === 'open' ? 'open' : 'registry');

  if (input.rate !== undefined && input.totalRate !== undefined)
    problems.push(`${nameOf('rate')} and ${nameOf('totalRate')}: give one of them`);
  if (input.duration !== undefined && input.messages !== undefined)
    problems.push(`${nameOf('duration')} and ${nameOf('messages')}: give one of them`);
  if (input.tenant !== undefined && auth === 'open')
    problems.push(
      `${nameOf('tenant')}: the gateway puts every device in tenant '${DEFAULT_TENANT}' with open auth`,
    );

  const devices = o.devices ?? DEFAULT_DEVICES;
  const rate = o.totalRate !== undefined ? o.totalRate / devices : (o.rate ?? DEFAULT_RATE_PER_S);
  const batch = o.batch ?? 1;
  if (rate * batch > MAX_SAMPLES_PER_S)
    problems.push(
      `${nameOf('rate')} × ${nameOf('batch')}: a device samples at most ${MAX_SAMPLES_PER_S} times a second ` +
        `(got ${rate * batch})`,
    );
  const publishPeriodMs = 1000 / rate;
  for (const key of ['late', 'outOfOrder'] as const) {
    if ((o[key] ?? 0) > 0 && publishPeriodMs > MAX_FAULTY_PUBLISH_PERIOD_MS)
      problems.push(
        `${nameOf(key)}: needs a device to publish at least every ${MAX_FAULTY_PUBLISH_PERIOD_MS / 1000} s ` +
          `(rate ≥ ${1000 / MAX_FAULTY_PUBLISH_PERIOD_MS}/s) to stay inside the processors' 5 s lateness`,
      );
  }
  if (o.duration !== undefined && o.duration < publishPeriodMs)
    problems.push(
      `${nameOf('duration')}: shorter than one publish period (${Math.round(publishPeriodMs)} ms)`,
    );
  if (o.messages !== undefined && o.messages < devices)
    problems.push(`${nameOf('messages')}: fewer than one publish per device`);

  const seed = o.seed ?? randomInt(0, 2 ** 31 - 1);
  const runId = o.tenant ?? `sim-${seed}-${randomBytes(2).toString('hex')}`;
  if (runId.length > MAX_RUN_ID_CHARS || !isDeviceId(`${runId}-${devices}`))
    problems.push(`${nameOf('tenant')}: too long to prefix device ids`);

  if (problems.length > 0) throw new SimConfigError(problems);
  const port =
    environment.MQTT_PORT === undefined || environment.MQTT_PORT === '' ? undefined : environment.MQTT_PORT;
  return Object.freeze({
    devices,
    rate,
    durationMs: o.messages === undefined ? (o.duration ?? DEFAULT_DURATION_MS) : undefined,
    messages: o.messages,
    qos: o.qos,
    batch,
    url: o.url ?? environment.MQTT_URL ?? (port ? `mqtt://127.0.0.1:${port}` : DEFAULT_MQTT_URL),
    natsUrl: o.nats ?? environment.NATS_URL ?? DEFAULT_NATS_URL,
    auth,
    runId,
    tenant: auth === 'open' ? DEFAULT_TENANT : runId,
    seed,
    schema: o.schema,
    encoding: o.encoding,
    faults: Object.freeze({
      invalid: o.invalid,
      duplicates: o.duplicates,
      late: o.late,
      outOfOrder: o.outOfOrder,
      fahrenheit: o.fahrenheit,
      churn: o.churn,
      offline: o.offline,
      overheat: o.overheat,
      naps: o.naps,
    }),
    ledger: o.ledger,
    inflight: o.inflight,
    connectConcurrency: o.connectConcurrency,
    keepDevices: o.keepDevices,
    types: Object.freeze(o.types),
    sites: o.sites,
    progress: o.progress,
    drainTimeoutMs: o.drainTimeout,
    json: o.json,
  });
}

/** Verify options from code or CLI values; INFLUX_* and NATS_URL come from the environment. */
export function resolveVerifyOptions(
  input: VerifyInput,
  environment: Environment = process.env,
  nameOf: (key: string) => string = flagOf,
): Readonly<VerifyOptions> {
  const problems: string[] = [];
  const fromEnv = (v: string | undefined) => (v === '' ? undefined : v);
  const envNames: Record<string, string> = {
    influxUrl: 'INFLUX_URL',
    influxToken: 'INFLUX_TOKEN',
    influxOrg: 'INFLUX_ORG',
    influxBucket: 'INFLUX_BUCKET',
  };
  const o = parseFields(
    VerifyFields,
    {
      ...input,
      influxUrl: input.influxUrl ?? fromEnv(environment.INFLUX_URL),
      influxToken: input.influxToken ?? fromEnv(environment.INFLUX_TOKEN),
      influxOrg: input.influxOrg ?? fromEnv(environment.INFLUX_ORG),
      influxBucket: input.influxBucket ?? fromEnv(environment.INFLUX_BUCKET),
    },
    problems,
    (key) => envNames[key] ?? nameOf(key),
  );
  if (problems.length > 0) throw new SimConfigError(problems);
  return Object.freeze({
    ledger: o.ledger,
    tsdb: o.tsdb,
    waitMs: o.wait,
    natsUrl: o.nats ?? fromEnv(environment.NATS_URL) ?? DEFAULT_NATS_URL,
    deadLetters: o.deadLetters,
    rows: o.rows,
    json: o.json,
    influx: Object.freeze({
      url: o.influxUrl,
      token: o.influxToken,
      org: o.influxOrg,
      bucket: o.influxBucket,
    }),
  });
}

const RUN_FLAGS = {
  devices: { type: 'string' },
  rate: { type: 'string' },
  'total-rate': { type: 'string' },
  duration: { type: 'string' },
  messages: { type: 'string' },
  qos: { type: 'string' },
  batch: { type: 'string' },
  url: { type: 'string' },
  nats: { type: 'string' },
  auth: { type: 'string' },
  tenant: { type: 'string' },
  seed: { type: 'string' },
  schema: { type: 'string' },
  encoding: { type: 'string' },
  invalid: { type: 'string' },
  duplicates: { type: 'string' },
  late: { type: 'string' },
  'out-of-order': { type: 'string' },
  fahrenheit: { type: 'string' },
  churn: { type: 'string' },
  offline: { type: 'string' },
  overheat: { type: 'string' },
  naps: { type: 'string' },
  ledger: { type: 'string' },
  inflight: { type: 'string' },
  'connect-concurrency': { type: 'string' },
  'keep-devices': { type: 'boolean' },
  types: { type: 'string' },
  sites: { type: 'string' },
  progress: { type: 'string' },
  'drain-timeout': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const VERIFY_FLAGS = {
  ledger: { type: 'string' },
  tsdb: { type: 'string' },
  wait: { type: 'string' },
  nats: { type: 'string' },
  'no-deadletters': { type: 'boolean' },
  rows: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Flags = Record<string, { type: 'string' | 'boolean'; short?: string }>;

/**
 * Non-strict parseArgs, then every unknown option, missing value and stray argument is listed
 * (strict mode stops at the first).
 */
function parseFlags(
  argv: string[],
  flags: Flags,
  problems: string[],
): { values: Record<string, string | boolean>; help: boolean } {
  const { values, positionals, tokens } = parseArgs({
    args: argv,
    options: flags,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const flag = flags[token.name];
    if (flag === undefined) problems.push(`${token.rawName}: not an option`);
    else if (flag.type === 'string' && token.value === undefined)
      problems.push(`${token.rawName}: needs a value`);
    else if (flag.type === 'boolean' && token.inlineValue) problems.push(`${token.rawName}: takes no value`);
  }
  for (const p of positionals) problems.push(`'${p}': unexpected argument`);
  const out: Record<string, string | boolean> = {};
  for (const [name, value] of Object.entries(values)) {
    const flag = flags[name];
    if (flag === undefined || name === 'help' || value === undefined) continue;
    if (flag.type === 'string' && typeof value !== 'string') continue; // reported above
    out[camelOf(name)] = value as string | boolean;
  }
  return { values: out, help: values.help === true };
}

export type Command =
  | { command: 'run'; options: Readonly<RunOptions> }
  | { command: 'verify'; options: Readonly<VerifyOptions> }
  | { command: 'help' };

/** `simulate [run options]` or `simulate verify --ledger FILE …`. Throws SimConfigError listing every problem. */
export function parseCommand(argv: readonly string[], environment: Environment = process.env): Command {
  const args = [...argv];
  const problems: string[] = [];
  const nameOf = (key: string) => flagOf(key);
  if (args[0] === 'verify') {
    const { values, help } = parseFlags(args.slice(1), VERIFY_FLAGS, problems);
    if (help) return { command: 'help' };
    const { noDeadletters, ...rest } = values;
    const input: VerifyInput = { ...rest, ...(noDeadletters === true ? { deadLetters: false } : {}) };
    try {
      const options = resolveVerifyOptions(input, environment, nameOf);
      if (problems.length > 0) throw new SimConfigError(problems);
      return { command: 'verify', options };
    } catch (err) {
      if (err instanceof SimConfigError) throw new SimConfigError([...problems, ...err.problems]);
      throw err;
    }
  }
  if (args[0] === 'run') args.shift();
  const { values, help } = parseFlags(args, RUN_FLAGS, problems);
  if (help) return { command: 'help' };
  try {
    const options = resolveRunOptions(values as RunInput, environment, nameOf);
    if (problems.length > 0) throw new SimConfigError(problems);
    return { command: 'run', options };
  } catch (err) {
    if (err instanceof SimConfigError) throw new SimConfigError([...problems, ...err.problems]);
    throw err;
  }
}

export const USAGE = `usage: npm run simulate -- [run] [options]
       npm run simulate -- verify --ledger FILE [options]

run: a fleet of MQTT devices publishing to the gateway
  --devices N            devices, each its own connection (default ${DEFAULT_DEVICES})
  --rate R               publishes per second per device (default ${DEFAULT_RATE_PER_S})
  --total-rate R         publishes per second for the whole fleet, instead of --rate
  --duration D           how long to publish, e.g. 30s, 5m (default ${DEFAULT_DURATION_MS / 1000}s)
  --messages N           publishes of the whole fleet, instead of --duration
  --qos 0|1|2            (default 1; at QoS 0 nothing is acknowledged, so nothing is promised)
  --batch N              readings per publish, sent as a JSON array (default 1)
  --schema v1|v2|mixed   payload version (default mixed)
  --encoding json|cbor|mixed  payload encoding: CBOR goes to devices/{id}/telemetry/cbor; mixed picks
                         one at random for each publish (default json)
  --types LIST           device types: ${DEVICE_TYPES.join(',')} (default all)
  --sites N              devices are spread over this many site labels (default ${DEFAULT_SITES})
  --url URL              gateway (default MQTT_URL, or mqtt://127.0.0.1:MQTT_PORT, or ${DEFAULT_MQTT_URL})
  --auth registry|open   registry: provision the devices in NATS KV first (default AUTH_MODE, or registry)
  --nats URL             NATS for provisioning (default NATS_URL, or ${DEFAULT_NATS_URL})
  --tenant T             tenant and device id prefix (default sim-<seed>-<random>, unique per run)
  --seed N               repeat a run's values and faults exactly (default random, printed)
  --ledger FILE          write what was sent and acknowledged, for verify
  --inflight N           unacknowledged publishes per device at most (default ${DEFAULT_INFLIGHT})
  --connect-concurrency N  connection attempts at once (default ${DEFAULT_CONNECT_CONCURRENCY})
  --keep-devices         leave the provisioned devices in the registry afterwards
  --progress auto|tty|plain|none   live line on a terminal, a line every 5 s otherwise
  --drain-timeout D      how long to wait for outstanding acknowledgements at the end (default 15s)
  --json                 final report as JSON on stdout
faults, in percent:
  --invalid P            publishes followed by one the gateway must dead-letter (by reason code)
  --duplicates P         publishes sent again, identical, once acknowledged
  --late P               readings held back and sent 1–4 s behind the device's newest
  --out-of-order P       publishes swapped with the next
  --fahrenheit P         temperature readings sent in °F (payload v2 with unit)
  --churn P              devices dropping their connection uncleanly (last will), per minute
  --offline P            devices going silent part-way through
  --overheat P           thermometers running ${OVERHEAT_DEGREES} °C hot for ${OVERHEAT_MS / 1000} s every ${EPISODE_EVERY_MS / 60_000} min (the first time 20–90 s in)
  --naps P               devices silent for ${NAP_MS / 1000} s every ${EPISODE_EVERY_MS / 60_000} min (the first time 20–90 s in)

verify: compare a ledger with the TSDB and DEADLETTER; exit 1 on any difference
  --ledger FILE          (required)
  --tsdb auto|victoria|influx   (default auto: probe INFLUX_URL)
  --wait D               keep checking until exact or this long has passed (default ${DEFAULT_VERIFY_WAIT_MS / 1000}s)
  --rows N               differences shown (default ${DEFAULT_VERIFY_ROWS})
  --nats URL             for DEADLETTER (default NATS_URL, or ${DEFAULT_NATS_URL})
  --no-deadletters       skip the DEADLETTER check
  --json                 report as JSON on stdout
  TSDB from INFLUX_URL, INFLUX_TOKEN, INFLUX_ORG, INFLUX_BUCKET, as the processors use them.

exit codes: 0 done / exact, 1 differences found, 2 bad options, 3 a server could not be reached`;
