import { describe, expect, it } from 'vitest';
import { parseCommand, resolveRunOptions } from '../../simulators/config.js';
import { SimConfigError } from '../../simulators/errors.js';

function problemsOf(argv: string[], env: Record<string, string> = {}): string[] {
  try {
    parseCommand(argv, env);
  } catch (err) {
    if (err instanceof SimConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('simulate options', () => {
  it('has defaults for everything', () => {
    const c = parseCommand([], {});
    expect(c.command).toBe('run');
    if (c.command !== 'run') return;
    expect(c.options).toMatchObject({
      devices: 100,
      rate: 1,
      durationMs: 60_000,
      qos: 1,
      batch: 1,
      schema: 'mixed',
      url: 'mqtt://127.0.0.1:1883',
      natsUrl: 'nats://127.0.0.1:4222',
      auth: 'registry',
      faults: {
        invalid: 0,
        duplicates: 0,
        late: 0,
        outOfOrder: 0,
        fahrenheit: 0,
        churn: 0,
        offline: 0,
        overheat: 0,
        naps: 0,
      },
    });
    expect(c.options.tenant).toMatch(/^sim-\d+-[0-9a-f]{4}$/);
    expect(c.options.runId).toBe(c.options.tenant);
    expect(Object.isFrozen(c.options)).toBe(true);
  });

  it('refuses a duration without its unit instead of reading it as milliseconds', () => {
    expect(problemsOf(['run', '--duration', '20'])).toEqual(['--duration: add a unit: 20s (got "20")']);
    expect(problemsOf(['verify', '--ledger', 'run.ledger', '--wait', '90'])).toEqual([
      '--wait: add a unit: 90s (got "90")',
    ]);
    const c = parseCommand(['run', '--duration', '20s'], {});
    expect(c.command === 'run' && c.options.durationMs).toBe(20_000);
  });

  it('parses every option', () => {
    const c = parseCommand(
      [
        'run',
        '--devices=1000',
        '--total-rate',
        '10000',
        '--messages',
        '50000',
        '--qos',
        '0',
        '--batch',
        '5',
        '--schema',
        'v2',
        '--invalid',
        '1',
        '--duplicates',
        '2',
        '--late',
        '3',
        '--out-of-order',
        '4',
        '--fahrenheit',
        '5',
        '--churn',
        '6',
        '--offline',
        '7',
        '--seed',
        '42',
        '--tenant',
        'bench',
        '--ledger',
        'l.jsonl',
        '--types',
        'meter,thermometer',
        '--keep-devices',
      ],
      { NATS_URL: 'nats://n:4222', MQTT_PORT: '1884' },
    );
    if (c.command !== 'run') throw new Error('expected run');
    expect(c.options).toMatchObject({
      devices: 1000,
      rate: 10,
      messages: 50_000,
      durationMs: undefined,
      qos: 0,
      batch: 5,
      schema: 'v2',
      seed: 42,
      tenant: 'bench',
      runId: 'bench',
      ledger: 'l.jsonl',
      types: ['meter', 'thermometer'],
      keepDevices: true,
      natsUrl: 'nats://n:4222',
      url: 'mqtt://127.0.0.1:1884',
      faults: {
        invalid: 1,
        duplicates: 2,
        late: 3,
        outOfOrder: 4,
        fahrenheit: 5,
        churn: 6,
        offline: 7,
        overheat: 0,
        naps: 0,
      },
    });
  });

  it('lists every problem at once', () => {
    const problems = problemsOf([
      '--devices',
      'many',
      '--rate',
      '1',
      '--total-rate',
      '5',
      '--qos',
      '3',
      '--invalid',
      '150',
      '--schema',
      'v9',
      '--bogus',
      '--duration',
      'soon',
      '--tenant',
      'Upper Case',
      'stray',
      '--url',
    ]);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^--devices: .*"many"/),
        expect.stringMatching(/^--rate and --total-rate: give one of them/),
        expect.stringMatching(/^--qos: /),
        expect.stringMatching(/^--invalid: a percentage/),
        expect.stringMatching(/^--schema: /),
        expect.stringMatching(/^--bogus: not an option/),
        expect.stringMatching(/^--duration: expected a duration/),
        expect.stringMatching(/^--tenant: lowercase/),
        expect.stringMatching(/^'stray': unexpected argument/),
        expect.stringMatching(/^--url: needs a value/),
      ]),
    );
    expect(problems.length).toBeGreaterThanOrEqual(10);
  });

  it('refuses faults that would break the ledger’s exactness, and contradictions', () => {
    expect(problemsOf(['--rate', '0.2', '--late', '5'])).toEqual([
      expect.stringMatching(/^--late: needs a device/),
    ]);
    expect(problemsOf(['--rate', '2000'])).toEqual([expect.stringMatching(/samples at most 1000 times/)]);
    expect(problemsOf(['--duration', '10s', '--messages', '100'])).toEqual([
      '--duration and --messages: give one of them',
    ]);
    expect(problemsOf(['--auth', 'open', '--tenant', 'acme'])).toEqual([
      expect.stringMatching(/^--tenant: the gateway puts every device in tenant 'default'/),
    ]);
  });

  it('follows AUTH_MODE=open like the gateway: tenant default, run id still unique', () => {
    const c = parseCommand(['--seed', '7'], { AUTH_MODE: 'open' });
    if (c.command !== 'run') throw new Error('expected run');
    expect(c.options.auth).toBe('open');
    expect(c.options.tenant).toBe('default');
    expect(c.options.runId).toMatch(/^sim-7-/);
  });

  it('takes the same options from code, with values or strings', () => {
    const o = resolveRunOptions({ devices: 5, duration: '2s', churn: '10', types: ['meter'] }, {});
    expect(o).toMatchObject({ devices: 5, durationMs: 2_000, faults: { churn: 10 }, types: ['meter'] });
    expect(() => resolveRunOptions({ devices: 0, qos: 5 }, {})).toThrow(SimConfigError);
  });
});

describe('simulate verify options', () => {
  it('needs a ledger, takes the TSDB from INFLUX_*', () => {
    expect(problemsOf(['verify'])).toEqual([expect.stringMatching(/^--ledger: required/)]);
    const c = parseCommand(['verify', '--ledger', 'x.jsonl', '--wait', '5s', '--no-deadletters'], {
      INFLUX_URL: 'http://tsdb:8428',
      INFLUX_TOKEN: 'secret',
      INFLUX_BUCKET: 'b',
    });
    if (c.command !== 'verify') throw new Error('expected verify');
    expect(c.options).toMatchObject({
      ledger: 'x.jsonl',
      waitMs: 5_000,
      deadLetters: false,
      tsdb: 'auto',
      influx: { url: 'http://tsdb:8428', token: 'secret', org: 'iot', bucket: 'b' },
    });
  });

  it('lists bad verify options and environment together', () => {
    const problems = problemsOf(['verify', '--ledger', 'x', '--tsdb', 'prometheus', '--devices', '3'], {
      INFLUX_URL: 'ftp://nope',
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^--devices: not an option/),
        expect.stringMatching(/^--tsdb: /),
        expect.stringMatching(/^INFLUX_URL: expected a URL/),
      ]),
    );
  });
});
