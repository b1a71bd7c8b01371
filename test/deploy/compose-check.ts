import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, resolve } from 'node:path';
import { parse } from 'yaml';
import type { z } from 'zod';
import { CONFIG_FILE_VAR, ConfigError, loadConfig } from '../../common/config.js';
import { parseDuration } from '../../common/duration.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { loadAlertRules } from '../../processors/alerts/alert-rules.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { type Environment, parseCommand } from '../../simulators/config.js';
import { SimConfigError } from '../../simulators/errors.js';

/**
 * Static checks of docker-compose.yml against the code, for a machine without Docker: what each of
 * our services sets must be configuration its program knows and accepts, its ports the defaults the
 * README, Prometheus and the dashboards assume, every mounted file must exist (and parse, where we
 * own the parser), images pinned, healthchecks everywhere, secrets only interpolated. Returns every
 * problem found, as `service: what`, so one run lists them all.
 */

type Doc = Record<string, unknown>;
type Env = Record<string, string>;

/**
 * The variables simulators/config.ts reads (its `Environment`). The simulator has no zod schema of
 * its environment; the two type checks below keep this list and that interface equal both ways.
 */
export const SIMULATOR_ENV = [
  'NATS_URL',
  'AUTH_MODE',
  'MQTT_URL',
  'MQTT_PORT',
  'INFLUX_URL',
  'INFLUX_TOKEN',
  'INFLUX_ORG',
  'INFLUX_BUCKET',
] as const satisfies readonly (keyof Environment)[];
type Unlisted = Exclude<keyof Environment, (typeof SIMULATOR_ENV)[number]>;
const simulatorEnvIsComplete: [Unlisted] extends [never] ? true : Unlisted = true;
void simulatorEnvIsComplete;

interface Loaded {
  /** Effective configuration, or undefined when the environment was refused. */
  config: Record<string, unknown> | undefined;
  problems: string[];
}

/** One program of our image, recognised by the script its service's `command` runs. */
interface Program {
  script: string;
  envNames: readonly string[];
  load(env: Env, args: string[]): Loaded;
  /** Variables naming the ports the program listens on; the first is where /metrics and /readyz are. */
  portVars: readonly string[];
  defaults: Record<string, unknown>;
}

function zodProgram(script: string, schema: z.ZodObject, portVars: string[]): Program {
  const load = (env: Env): Loaded => {
    try {
      return { config: loadConfig(schema, env) as Record<string, unknown>, problems: [] };
    } catch (err) {
      if (err instanceof ConfigError) return { config: undefined, problems: [...err.problems] };
      throw err;
    }
  };
  return {
    script,
    // CONFIG_FILE names a JSON file of the same keys; loadConfig reads it and checks its keys too.
    envNames: [...Object.keys(schema.shape), CONFIG_FILE_VAR],
    load,
    portVars,
    defaults: load({}).config ?? {},
  };
}

export const PROGRAMS: readonly Program[] = [
  zodProgram('gateway/main.ts', GatewayConfigSchema, [
    'HTTP_PORT',
    'MQTT_PORT',
    'MQTT_WS_PORT',
    'MQTTS_PORT',
    'HTTP_INGEST_PORT',
  ]),
  zodProgram('processors/main.ts', ProcessorConfigSchema, ['HTTP_PORT']),
  {
    script: 'simulators/main.ts',
    envNames: SIMULATOR_ENV,
    load: (env, args) => {
      try {
        const command = parseCommand(args, env);
        if (command.command !== 'run')
          return { config: {}, problems: [`runs '${command.command}', not a fleet`] };
        return { config: {}, problems: [] };
      } catch (err) {
        if (err instanceof SimConfigError) return { config: undefined, problems: [...err.problems] };
        throw err;
      }
    },
    portVars: [],
    defaults: {},
  },
];

/** A real value for `${VAR:?…}`: long enough for any token rule, and plain enough for any id rule. */
const REQUIRED_PLACEHOLDER = 'x'.repeat(24);
const INTERPOLATION = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

/** Compose interpolation with no variables set: defaults apply, required ones get a placeholder. */
export function interpolate(value: string): string {
  return value.replace(INTERPOLATION, (whole, name?: string, op?: string, arg?: string, bare?: string) => {
    if (whole === '$$') return '$';
    if (bare !== undefined) return '';
    if (op?.endsWith('?')) return REQUIRED_PLACEHOLDER;
    if (op?.endsWith('-')) return arg ?? '';
    return name === undefined ? whole : '';
  });
}

/** Secret-looking names; `*_FILE` (a path) is not one. */
const SECRET_NAME = /(PASSWORD|TOKEN|SECRET)$|(^|_)KEY$/;
/** `${VAR:?message}` (required) or `${VAR:-}` (optional, empty when unset): never a literal value. */
const SECRET_VALUE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(:\?[^}]*|:-)\}$/;
/** An exact version in the tag (`2.10.22-alpine`, `v2.55.1`), or a digest. */
const PINNED_TAG = /^v?\d+\.\d+\.\d+([-.+][\w.-]+)?$/;

const isRecord = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] =>
  Array.isArray(v) ? v.map(String) : v === undefined ? [] : [String(v)];

export function parseCompose(text: string): Doc {
  // Compose resolves YAML merge keys (`<<: *app`); YAML 1.2 parsers need to be told.
  const doc: unknown = parse(text, { merge: true });
  if (!isRecord(doc)) throw new Error('docker-compose.yml is not a mapping');
  return doc;
}

function environmentOf(service: Doc): Env {
  const env = service.environment;
  const out: Env = {};
  if (Array.isArray(env)) {
    for (const item of env.map(String)) {
      const eq = item.indexOf('=');
      if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
      else out[item] = '';
    }
  } else if (isRecord(env)) {
    for (const [k, v] of Object.entries(env)) out[k] = v === null ? '' : String(v);
  }
  return out;
}

function imageProblem(image: string): string | undefined {
  const at = image.indexOf('@');
  if (at >= 0)
    return /^sha256:[0-9a-f]{64}$/.test(image.slice(at + 1)) ? undefined : `bad digest in '${image}'`;
  const colon = image.lastIndexOf(':');
  const tag = colon > image.lastIndexOf('/') ? image.slice(colon + 1) : undefined;
  if (tag === undefined) return `image '${image}' has no tag (that is :latest)`;
  if (!PINNED_TAG.test(tag)) return `image '${image}' is not pinned to an exact version`;
  return undefined;
}

interface Mount {
  source: string;
  target: string;
  bind: boolean;
}

function mountsOf(service: Doc): Mount[] {
  const out: Mount[] = [];
  for (const v of Array.isArray(service.volumes) ? service.volumes : []) {
    if (typeof v === 'string') {
      const [source = '', target = ''] = v.split(':');
      out.push({ source, target, bind: /^[./~]/.test(source) });
    } else if (isRecord(v)) {
      out.push({ source: String(v.source ?? ''), target: String(v.target ?? ''), bind: v.type === 'bind' });
    }
  }
  return out;
}

/** The host path (in the repo) behind a container path, through the service's bind mounts. */
function hostPathOf(root: string, service: Doc, containerPath: string): string | undefined {
  for (const m of mountsOf(service)) {
    if (!m.bind) continue;
    if (containerPath === m.target) return resolve(root, m.source);
    if (containerPath.startsWith(`${m.target}/`))
      return resolve(root, m.source, posix.relative(m.target, containerPath));
  }
  return undefined;
}

/** Container-side ports of `ports`, long or short syntax. */
function containerPorts(service: Doc): number[] {
  const out: number[] = [];
  for (const p of Array.isArray(service.ports) ? service.ports : []) {
    if (isRecord(p)) out.push(Number(p.target));
    else out.push(Number(String(p).split('/')[0]!.split(':').at(-1)));
  }
  return out;
}

function hostPorts(service: Doc): string[] {
  return (Array.isArray(service.ports) ? service.ports : [])
    .map((p) => (isRecord(p) ? String(p.published ?? '') : String(p).split(':').slice(0, -1).join(':')))
    .filter((p) => p !== '');
}

function replicasOf(service: Doc): number {
  const deploy = isRecord(service.deploy) ? service.deploy : {};
  return typeof deploy.replicas === 'number' ? deploy.replicas : 1;
}

function healthcheckTest(service: Doc): string[] | undefined {
  const hc = service.healthcheck;
  if (!isRecord(hc) || hc.disable === true) return undefined;
  const test = strings(hc.test);
  return test.length === 0 || test[0] === 'NONE' ? undefined : test;
}

/** `http://host:port/…` references in a string. */
function urlRefs(text: string): { host: string; port: number }[] {
  return [...text.matchAll(/\b(?:https?|nats|mqtt|tls|ws|wss):\/\/([A-Za-z0-9_.-]+):(\d+)/g)].map((m) => ({
    host: m[1]!,
    port: Number(m[2]),
  }));
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost']);

/** What the checks learn about each of our services before cross-checking them. */
interface AppService {
  name: string;
  program: Program;
  config: Record<string, unknown> | undefined;
  env: Env;
}

export function checkCompose(doc: Doc, root: string): string[] {
  const problems: string[] = [];
  const services = isRecord(doc.services) ? doc.services : {};
  const names = Object.keys(services);
  const namedVolumes = new Set(Object.keys(isRecord(doc.volumes) ? doc.volumes : {}));
  const apps = new Map<string, AppService>();
  if (names.length === 0) return ['no services'];

  // Per service: image, healthcheck, mounts, secrets, dependencies; our programs' environment.
  for (const name of names) {
    const service = services[name];
    if (!isRecord(service)) {
      problems.push(`${name}: not a mapping`);
      continue;
    }
    const say = (what: string) => problems.push(`${name}: ${what}`);
    if (typeof service.image !== 'string') say('no image (a built image needs a pinned name too)');
    else {
      const bad = imageProblem(service.image);
      if (bad) say(bad);
    }
    if (healthcheckTest(service) === undefined) say('no healthcheck');
    for (const m of mountsOf(service)) {
      if (m.bind && !existsSync(resolve(root, m.source))) say(`mounts ${m.source}, which does not exist`);
      if (!m.bind && m.source !== '' && !namedVolumes.has(m.source))
        say(`volume '${m.source}' is not declared under top-level volumes`);
    }
    const env = environmentOf(service);
    for (const [key, value] of Object.entries(env)) {
      if (SECRET_NAME.test(key) && !SECRET_VALUE.test(value))
        say(`${key} is set literally; secrets come only as \${VAR:?message} (or \${VAR:-} when optional)`);
    }
    const deps = isRecord(service.depends_on) ? Object.keys(service.depends_on) : strings(service.depends_on);
    for (const dep of deps) if (!(dep in services)) say(`depends on '${dep}', which is not a service`);
    if (replicasOf(service) > 1 && hostPorts(service).length > 0)
      say(`runs ${replicasOf(service)} replicas but publishes fixed host ports`);

    const [script, ...args] = strings(service.command);
    const program = PROGRAMS.find((p) => p.script === script);
    if ('build' in service && program === undefined) {
      say(`runs '${script}', which is none of ${PROGRAMS.map((p) => p.script).join(', ')}`);
      continue;
    }
    if (program === undefined) continue;
    const known = new Set(program.envNames);
    for (const key of Object.keys(env)) {
      if (!known.has(key)) say(`${key} is not a variable ${program.script} reads`);
    }
    const resolved: Env = {};
    for (const [key, value] of Object.entries(env)) if (known.has(key)) resolved[key] = interpolate(value);
    // The program reads its files inside the container: check them where they are in the repo.
    for (const [key, value] of Object.entries(resolved)) {
      if (!value.startsWith('/')) continue;
      const host = hostPathOf(root, service, value);
      if (host === undefined) say(`${key}=${value} is not inside any bind mount`);
      else resolved[key] = host;
    }
    const loaded = program.load(resolved, args);
    for (const p of loaded.problems) say(`configuration refused: ${p}`);
    apps.set(name, { name, program, config: loaded.config, env });
    if (program.script === 'simulators/main.ts' && strings(service.profiles).length === 0)
      say('the simulator must sit under a profile, not start with every `up`');
  }

  /** Ports a service listens on: its program's configured ports, else what it publishes. */
  const portsOf = (name: string): number[] | undefined => {
    const app = apps.get(name);
    if (app?.config)
      return app.program.portVars.map((v) => app.config![v]).filter((p) => typeof p === 'number');
    const service = services[name];
    return isRecord(service) && service.ports !== undefined ? containerPorts(service) : undefined;
  };
  const httpPortOf = (name: string): number | undefined => {
    const app = apps.get(name);
    const v = app?.config?.[app.program.portVars[0] ?? ''];
    return typeof v === 'number' ? v : undefined;
  };
  const checkRef = (from: string, where: string, host: string, port: number, http: boolean) => {
    if (LOOPBACK.has(host)) host = from;
    else if (!(host in services))
      return problems.push(`${from}: ${where} names host '${host}', not a service`);
    // A service whose configuration was refused has no known ports; that is reported already.
    if (apps.has(host) && apps.get(host)!.config === undefined) return undefined;
    const expected = http && apps.has(host) ? [httpPortOf(host)] : portsOf(host);
    if (expected !== undefined && !expected.includes(port))
      problems.push(`${from}: ${where} uses ${host}:${port}, but ${host} listens on ${expected.join(', ')}`);
    return undefined;
  };

  // Our services: ports, health endpoints and the hosts they are told to reach.
  for (const app of apps.values()) {
    const service = services[app.name] as Doc;
    const say = (what: string) => problems.push(`${app.name}: ${what}`);
    if (app.config === undefined) continue;
    for (const v of app.program.portVars) {
      const port = app.config[v];
      // A port that is off by default (MQTTS_PORT, HTTP_INGEST_PORT) may be turned on at any number.
      const fallback = app.program.defaults[v];
      if (port !== undefined && fallback !== undefined && port !== fallback)
        say(
          `${v} is ${port}, not its default ${app.program.defaults[v]} (the README, Prometheus and dashboards use it)`,
        );
    }
    const listening = portsOf(app.name) ?? [];
    for (const port of containerPorts(service)) {
      if (!listening.includes(port))
        say(`publishes container port ${port}, but listens on ${listening.join(', ')}`);
    }
    for (const ref of urlRefs((healthcheckTest(service) ?? []).join(' ')))
      checkRef(app.name, 'healthcheck', ref.host, ref.port, true);
    for (const [key, value] of Object.entries(app.env)) {
      for (const ref of urlRefs(interpolate(value))) checkRef(app.name, key, ref.host, ref.port, false);
    }
    const grace = parseDuration(String(service.stop_grace_period ?? '10s')) ?? 0;
    const drain = app.config.SHUTDOWN_GRACE_MS;
    if (typeof drain === 'number' && grace <= drain)
      say(
        `stop_grace_period ${grace} ms does not exceed SHUTDOWN_GRACE_MS ${drain} ms: docker would kill the drain`,
      );
    const rules = app.config.ALERT_RULES_FILE;
    if (typeof rules === 'string') {
      try {
        loadAlertRules(rules);
      } catch (err) {
        say(`ALERT_RULES_FILE: ${(err as Error).message}`);
      }
    }
  }

  const byImage = (prefix: string) =>
    names.filter((n) => isRecord(services[n]) && String((services[n] as Doc).image).startsWith(prefix));
  for (const name of byImage('prom/prometheus:'))
    problems.push(...checkPrometheus(root, services, name, apps, checkRef));
  for (const name of byImage('grafana/grafana:'))
    problems.push(...checkGrafana(root, services, name, checkRef));
  for (const name of byImage('influxdb:')) problems.push(...checkInfluxdb(root, services, name, apps));
  for (const name of byImage('nats:')) problems.push(...checkNats(root, services, name));
  return problems;
}

type CheckRef = (from: string, where: string, host: string, port: number, http: boolean) => unknown;

function readYamlMount(root: string, service: Doc, containerPath: string): Doc | undefined {
  const host = hostPathOf(root, service, containerPath);
  if (host === undefined || !existsSync(host)) return undefined;
  const doc: unknown = parse(readFileSync(host, 'utf8'));
  return isRecord(doc) ? doc : undefined;
}

function checkPrometheus(
  root: string,
  services: Doc,
  name: string,
  apps: Map<string, AppService>,
  checkRef: CheckRef,
): string[] {
  const problems: string[] = [];
  const service = services[name] as Doc;
  const flag = strings(service.command).find((a) => a.startsWith('--config.file='));
  const path = flag?.slice('--config.file='.length) ?? '/etc/prometheus/prometheus.yml';
  const config = readYamlMount(root, service, path);
  if (config === undefined) return [`${name}: ${path} is not a mounted YAML file`];
  const scraped = new Map<string, 'static' | 'dns'>();
  for (const job of Array.isArray(config.scrape_configs) ? config.scrape_configs : []) {
    if (!isRecord(job)) continue;
    const where = `scrape job '${String(job.job_name)}'`;
    for (const sc of Array.isArray(job.static_configs) ? job.static_configs : []) {
      for (const target of isRecord(sc) ? strings(sc.targets) : []) {
        const [host = '', port = ''] = target.split(':');
        checkRef(name, where, host, Number(port), true);
        scraped.set(host, scraped.get(host) ?? 'static');
      }
    }
    for (const dns of Array.isArray(job.dns_sd_configs) ? job.dns_sd_configs : []) {
      if (!isRecord(dns)) continue;
      for (const host of strings(dns.names)) {
        checkRef(name, where, host, Number(dns.port), true);
        scraped.set(host, 'dns');
      }
    }
  }
  for (const app of apps.values()) {
    if (app.program.portVars.length === 0) continue;
    const how = scraped.get(app.name);
    if (how === undefined) problems.push(`${name}: does not scrape ${app.name}`);
    else if (how === 'static' && replicasOf(services[app.name] as Doc) > 1)
      problems.push(`${name}: scrapes ${app.name} by a static target, which reaches one replica of several`);
  }
  return problems;
}

/** `$VAR` and `${VAR}` outside comments: Grafana expands them from its environment. */
function envRefs(text: string): string[] {
  const code = text
    .split('\n')
    .map((line) => line.replace(/(^|\s)#.*$/, ''))
    .join('\n');
  return [...code.matchAll(/\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)/g)].map((m) => (m[1] ?? m[2])!);
}

function checkGrafana(root: string, services: Doc, name: string, checkRef: CheckRef): string[] {
  const problems: string[] = [];
  const say = (what: string) => problems.push(`${name}: ${what}`);
  const service = services[name] as Doc;
  const env = environmentOf(service);
  const password = env.GF_SECURITY_ADMIN_PASSWORD;
  // Without one Grafana starts with admin/admin.
  if (password === undefined) say('GF_SECURITY_ADMIN_PASSWORD is not set');
  else if (!/^\$\{\w+:\?/.test(password))
    say(`GF_SECURITY_ADMIN_PASSWORD must be required (\${VAR:?message})`);
  const provisioning = hostPathOf(root, service, '/etc/grafana/provisioning');
  if (provisioning === undefined || !existsSync(provisioning))
    return [...problems, `${name}: no provisioning mount`];
  for (const sub of ['datasources', 'dashboards']) {
    const dir = join(provisioning, sub);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      say(`provisioning has no ${sub}/`);
      continue;
    }
    for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f))) {
      const text = readFileSync(join(dir, file), 'utf8');
      for (const ref of envRefs(text)) {
        if (!(ref in env)) say(`${sub}/${file} expands $${ref}, which Grafana's environment does not set`);
      }
      const doc: unknown = parse(text);
      if (!isRecord(doc)) continue;
      for (const ds of Array.isArray(doc.datasources) ? doc.datasources : []) {
        for (const ref of isRecord(ds) ? urlRefs(String(ds.url ?? '')) : [])
          checkRef(name, `datasource '${String(ds.uid)}'`, ref.host, ref.port, false);
      }
      for (const provider of Array.isArray(doc.providers) ? doc.providers : []) {
        const path =
          isRecord(provider) && isRecord(provider.options) ? String(provider.options.path) : undefined;
        if (path === undefined) continue;
        const host = hostPathOf(root, service, path);
        if (host === undefined || !existsSync(host) || !statSync(host).isDirectory())
          say(`dashboard provider reads ${path}, which no mount provides`);
        else if (!readdirSync(host).some((f) => f.endsWith('.json'))) say(`${path} holds no dashboard JSON`);
      }
    }
  }
  return problems;
}

/** `${NAME…}` → NAME, the variable a value interpolates. */
const variableOf = (value: string | undefined) => /^\$\{([A-Za-z_][A-Za-z0-9_]*)/.exec(value ?? '')?.[1];

function checkInfluxdb(root: string, services: Doc, name: string, apps: Map<string, AppService>): string[] {
  const problems: string[] = [];
  const say = (what: string) => problems.push(`${name}: ${what}`);
  const service = services[name] as Doc;
  const env = environmentOf(service);
  for (const app of apps.values()) {
    if (app.program.script !== 'processors/main.ts' || app.config === undefined) continue;
    if (app.config.INFLUX_ORG !== env.DOCKER_INFLUXDB_INIT_ORG)
      say(
        `org '${env.DOCKER_INFLUXDB_INIT_ORG}' is not INFLUX_ORG '${app.config.INFLUX_ORG}' of ${app.name}`,
      );
    if (app.config.INFLUX_BUCKET !== env.DOCKER_INFLUXDB_INIT_BUCKET)
      say(
        `bucket '${env.DOCKER_INFLUXDB_INIT_BUCKET}' is not INFLUX_BUCKET '${app.config.INFLUX_BUCKET}' of ${app.name}`,
      );
    // A literal token is reported as such; here only two different variables are a mistake.
    const tokenVar = variableOf(app.env.INFLUX_TOKEN);
    const adminVar = variableOf(env.DOCKER_INFLUXDB_INIT_ADMIN_TOKEN);
    if (tokenVar && adminVar && tokenVar !== adminVar)
      say(`the admin token comes from $${adminVar}, INFLUX_TOKEN of ${app.name} from $${tokenVar}`);
  }
  const init = hostPathOf(root, service, '/docker-entrypoint-initdb.d');
  if (init === undefined || !existsSync(init)) say('no init scripts mounted (the InfluxQL mapping)');
  else {
    const scripts = readdirSync(init).filter((f) => f.endsWith('.sh'));
    if (scripts.length === 0) say('the init directory holds no *.sh');
    // The entrypoint runs only executable scripts (run-parts); a lost mode bit skips it silently.
    for (const f of scripts)
      if ((statSync(join(init, f)).mode & 0o111) === 0) say(`init script ${f} is not executable`);
  }
  return problems;
}

function checkNats(root: string, services: Doc, name: string): string[] {
  const problems: string[] = [];
  const say = (what: string) => problems.push(`${name}: ${what}`);
  const service = services[name] as Doc;
  const args = strings(service.command);
  const at = args.findIndex((a) => a === '--config' || a === '-c');
  const path = at >= 0 ? args[at + 1] : undefined;
  const host = path === undefined ? undefined : hostPathOf(root, service, path);
  if (host === undefined || !existsSync(host)) return [`${name}: runs without a mounted config file`];
  const conf = readFileSync(host, 'utf8').replace(/#.*$/gm, '');
  const storeDir = /\bstore_dir\s*[:=]\s*"?([^\s"]+)/.exec(conf)?.[1];
  if (!/\bjetstream\s*\{/.test(conf)) say('JetStream is not enabled in its config');
  if (storeDir === undefined || !mountsOf(service).some((m) => !m.bind && m.target === storeDir))
    say(`JetStream store_dir ${storeDir ?? '(unset)'} is not on a named volume`);
  const monitor = Number(/\bhttp_port\s*[:=]\s*(\d+)/.exec(conf)?.[1]);
  const probed = urlRefs((healthcheckTest(service) ?? []).join(' '));
  if (!probed.some((r) => r.port === monitor))
    say(`healthcheck does not probe the monitoring port ${monitor}`);
  const client = Number(/^\s*port\s*[:=]\s*(\d+)/m.exec(conf)?.[1] ?? 4222);
  for (const p of containerPorts(service))
    if (p !== client) say(`publishes ${p}, but clients connect on ${client}`);
  return problems;
}

/** The Dockerfile: every base image pinned, the last stage not root, dependencies from the lockfile. */
export function checkDockerfile(text: string): string[] {
  const problems: string[] = [];
  const lines = text.split('\n').map((l) => l.trim());
  const stages: string[] = [];
  let user: string | undefined;
  for (const line of lines) {
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      const image = from[1]!;
      if (!stages.includes(image)) {
        const bad = imageProblem(image);
        if (bad) problems.push(`Dockerfile: ${bad}`);
      }
      if (from[2]) stages.push(from[2]);
      user = undefined;
    }
    const u = /^USER\s+(\S+)/i.exec(line);
    if (u) user = u[1];
    if (/^(ARG|ENV)\s+\S*(PASSWORD|TOKEN|SECRET)/i.test(line))
      problems.push(`Dockerfile: bakes in a secret: ${line}`);
  }
  if (user === undefined || user === 'root' || user === '0')
    problems.push('Dockerfile: the final stage runs as root');
  if (!lines.some((l) => /^RUN\s.*\bnpm ci\b/.test(l)))
    problems.push('Dockerfile: dependencies not installed with npm ci');
  return problems;
}

/** Top-level directories the Dockerfile copies into the image. */
export function copiedDirs(text: string): string[] {
  return [...text.matchAll(/^COPY\s+(?!--from)(\S+)\s+\S+\s*$/gm)].map((m) => m[1]!);
}
