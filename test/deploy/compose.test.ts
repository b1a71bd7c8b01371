import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkCompose,
  checkDockerfile,
  copiedDirs,
  interpolate,
  PROGRAMS,
  parseCompose,
} from './compose-check.js';

/**
 * docker-compose.yml and the Dockerfile checked against the code without Docker (compose-check.ts
 * says what is checked). Each deliberate breakage below must be reported, so a check that can never
 * fail does not pass for one that holds.
 */
const ROOT = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const compose = () => parseCompose(read('docker-compose.yml'));
/** `${…}` in compose syntax, spelt without a string that looks like a forgotten template. */
const variable = (inner: string) => `\${${inner}}`;

/** The parts of the parsed file the breakages below touch. */
interface Service {
  image?: string;
  command: string[];
  environment: Record<string, string>;
  volumes: unknown[];
  ports?: unknown[];
  healthcheck?: { test: string[] };
  profiles?: string[];
  stop_grace_period?: string;
  depends_on?: Record<string, unknown>;
  deploy?: { replicas: number };
}
type ServiceName = 'nats' | 'influxdb' | 'gateway' | 'processors' | 'prometheus' | 'grafana' | 'simulator';
interface Doc {
  services: Record<ServiceName, Service>;
}

/** Debian installs nats-server in /usr/sbin, which is not on a normal user's PATH. */
const NATS_SERVER_BIN =
  process.env.NATS_SERVER_BIN ??
  (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');

describe('docker-compose.yml', () => {
  it('agrees with the code', () => {
    expect(checkCompose(compose(), ROOT)).toEqual([]);
  });

  it('runs every service the issue asks for, our three programs among them', () => {
    const { services } = compose() as unknown as Doc;
    expect(Object.keys(services).sort()).toEqual(
      ['gateway', 'grafana', 'influxdb', 'nats', 'processors', 'prometheus', 'simulator'].sort(),
    );
    const scripts = Object.values(services).map((s) => s.command?.[0]);
    for (const p of PROGRAMS) expect(scripts).toContain(p.script);
    expect(services.processors.deploy?.replicas).toBeGreaterThanOrEqual(2);
    expect(services.simulator.profiles).toEqual(['demo']);
  });

  it('interpolates as compose does, with no variables set', () => {
    expect(interpolate(variable('A:?set A'))).toMatch(/^x+$/);
    expect(interpolate(variable('A:-'))).toBe('');
    // `$$` is a literal `$`: `$${B}` stays `${B}` for the container's shell.
    expect(interpolate(`${variable('A:-fallback')}/$$\u007bB}`)).toBe(`fallback/${variable('B')}`);
  });

  const breakages: [string, (d: Doc) => void, RegExp | RegExp[]][] = [
    [
      'an unknown variable',
      (d) => (d.services.gateway.environment.GATEWAY_PORT = '1884'),
      /gateway: GATEWAY_PORT is not a variable/,
    ],
    [
      'a value the schema refuses',
      (d) => (d.services.processors.environment.WINDOWS = '10s,15s'),
      /processors: configuration refused: WINDOWS/,
    ],
    [
      'an unpinned image',
      (d) => (d.services.nats.image = 'nats:latest'),
      /nats: image 'nats:latest' is not pinned/,
    ],
    [
      'an image with no tag',
      (d) => (d.services.grafana.image = 'grafana/grafana'),
      /grafana: image 'grafana\/grafana' has no tag/,
    ],
    [
      'a literal secret',
      (d) => (d.services.processors.environment.INFLUX_TOKEN = 'hunter2'),
      /processors: INFLUX_TOKEN is set literally/,
    ],
    ['a missing healthcheck', (d) => delete d.services.prometheus.healthcheck, /prometheus: no healthcheck/],
    [
      'a mount of a missing file',
      (d) => d.services.processors.volumes.push('./deploy/nope.yaml:/x.yaml:ro'),
      /processors: mounts \.\/deploy\/nope\.yaml/,
    ],
    [
      'a port off its default',
      (d) => (d.services.processors.environment.HTTP_PORT = '9000'),
      // …and so do the healthcheck and the scrape target that follow the default.
      [
        /processors: HTTP_PORT is 9000, not its default 8081/,
        /processors: healthcheck uses processors:8081, but processors listens on 9000/,
        /prometheus: scrape job 'processors' uses processors:8081/,
      ],
    ],
    [
      'a published port nothing listens on',
      (d) => d.services.gateway.ports!.push('8883:8883'),
      /gateway: publishes container port 8883/,
    ],
    [
      'a healthcheck on the wrong port',
      (d) => (d.services.processors.healthcheck!.test[3] = "fetch('http://127.0.0.1:8080/readyz')"),
      /processors: healthcheck uses processors:8080/,
    ],
    [
      'a host that is no service',
      (d) => (d.services.processors.environment.NATS_URL = 'nats://broker:4222'),
      /processors: NATS_URL names host 'broker'/,
    ],
    [
      'a simulator outside its profile',
      (d) => delete d.services.simulator.profiles,
      /simulator: the simulator must sit under a profile/,
    ],
    [
      'a simulator option it refuses',
      (d) => d.services.simulator.command.push('--qos', '3'),
      /simulator: configuration refused: --qos/,
    ],
    [
      'replicas on fixed host ports',
      (d) => (d.services.processors.ports = ['8081:8081']),
      /processors: runs 2 replicas but publishes fixed host ports/,
    ],
    [
      'a required secret made optional',
      (d) => (d.services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD = variable('P:-')),
      /grafana: GF_SECURITY_ADMIN_PASSWORD must be required/,
    ],
    [
      'Grafana without the token its datasource expands',
      (d) => delete d.services.grafana.environment.INFLUX_TOKEN,
      /grafana: datasources\/datasources\.yaml expands \$INFLUX_TOKEN/,
    ],
    [
      'a provisioning mount moved',
      (d) => (d.services.grafana.volumes[1] = './dashboards/json:/dashboards:ro'),
      /grafana: dashboard provider reads \/var\/lib\/grafana\/dashboards/,
    ],
    [
      'InfluxDB set up with another bucket',
      (d) => (d.services.influxdb.environment.DOCKER_INFLUXDB_INIT_BUCKET = 'other'),
      /influxdb: bucket 'other' is not INFLUX_BUCKET 'telemetry' of processors/,
    ],
    [
      'a gateway killed before it drains',
      (d) => (d.services.gateway.stop_grace_period = '5s'),
      /gateway: stop_grace_period 5000 ms does not exceed SHUTDOWN_GRACE_MS/,
    ],
    [
      'a JetStream store on no volume',
      (d) => (d.services.nats.volumes = [d.services.nats.volumes[0]]),
      /nats: JetStream store_dir \/data is not on a named volume/,
    ],
    [
      'a variable the simulator does not read',
      (d) => (d.services.simulator.environment.DEVICES = '50'),
      /simulator: DEVICES is not a variable simulators\/main\.ts reads/,
    ],
    [
      'a dependency on no service',
      (d) => (d.services.gateway.depends_on = { broker: { condition: 'service_healthy' } }),
      /gateway: depends on 'broker', which is not a service/,
    ],
    [
      'an undeclared named volume',
      (d) => d.services.prometheus.volumes.push('scratch:/scratch'),
      /prometheus: volume 'scratch' is not declared/,
    ],
  ];

  it.each(breakages)('reports %s', (_, breakIt, expected) => {
    const doc = structuredClone(compose()) as unknown as Doc;
    breakIt(doc);
    // Only the breakage: each check names exactly what is wrong, and nothing else moves.
    expect(checkCompose(doc as unknown as Record<string, unknown>, ROOT)).toEqual(
      [expected].flat().map((re) => expect.stringMatching(re)),
    );
  });

  it('reports a mounted alert rules file the processors would refuse', () => {
    const doc = structuredClone(compose()) as unknown as Doc;
    doc.services.processors.volumes = ['./package.json:/etc/processors/alert-rules.yaml:ro'];
    const problems = checkCompose(doc as unknown as Record<string, unknown>, ROOT);
    expect(problems).toEqual([expect.stringMatching(/processors: ALERT_RULES_FILE: invalid alert rules/)]);
  });

  it('reports scrape targets that miss a service or reach one replica of several', () => {
    const dir = mkdtempSync(join(tmpdir(), 'compose-check-'));
    try {
      const config = join(dir, 'prometheus.yml');
      writeFileSync(
        config,
        'scrape_configs:\n  - job_name: processors\n    static_configs:\n      - targets: [processors:8081]\n',
      );
      const doc = structuredClone(compose()) as unknown as Doc;
      doc.services.prometheus.volumes[0] = `${config}:/etc/prometheus/prometheus.yml:ro`;
      expect(checkCompose(doc as unknown as Record<string, unknown>, ROOT)).toEqual([
        expect.stringMatching(/prometheus: does not scrape gateway/),
        expect.stringMatching(/prometheus: scrapes processors by a static target/),
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists every variable compose requires in the README', () => {
    const text = read('docker-compose.yml');
    const required = new Set([...text.matchAll(/\$\{([A-Z_][A-Z0-9_]*):\?/g)].map((m) => m[1]!));
    expect([...required].sort()).toEqual(['GRAFANA_ADMIN_PASSWORD', 'INFLUX_ADMIN_PASSWORD', 'INFLUX_TOKEN']);
    const readme = read('README.md');
    for (const name of required) expect(readme).toMatch(new RegExp(`^${name}=`, 'm'));
  });
});

describe('mounted configuration', () => {
  it('nats.conf is one nats-server accepts', () => {
    const r = spawnSync(NATS_SERVER_BIN, ['-c', join(ROOT, 'deploy/nats/nats.conf'), '-t'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(r.error).toBeUndefined();
    expect(r.status, r.stderr + r.stdout).toBe(0);
  });

  it('the InfluxDB init script is valid bash', () => {
    const r = spawnSync('bash', ['-n', join(ROOT, 'deploy/influxdb/init/create-dbrp.sh')], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');

  it('is pinned, multi-stage, and runs as non-root', () => {
    expect(checkDockerfile(dockerfile)).toEqual([]);
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
  });

  it('copies every program compose runs, and what they import', () => {
    const dirs = copiedDirs(dockerfile);
    for (const p of PROGRAMS) expect(dirs).toContain(p.script.split('/')[0]);
    // Imported by all three; a missing one fails only at run time.
    for (const d of ['contract', 'common']) expect(dirs).toContain(d);
  });

  it('reports an unpinned base, a root final stage and a baked-in secret', () => {
    const broken = 'FROM node:20 AS deps\nRUN npm ci\nFROM deps\nENV INFLUX_TOKEN=abc\n';
    expect(checkDockerfile(broken)).toEqual([
      expect.stringMatching(/image 'node:20' is not pinned/),
      expect.stringMatching(/bakes in a secret/),
      expect.stringMatching(/runs as root/),
    ]);
  });

  it('.dockerignore keeps local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore').split('\n');
    for (const entry of ['node_modules', '.env', '.git', '.data']) expect(ignored).toContain(entry);
  });
});
