import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { telemetryTopic } from '../../contract/index.js';
import { closedByBroker, connectDevice } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { freePort, runScript, type Started, startScript } from '../kit/processes.js';

let nats: NatsServer;
const started: Started[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  for (const s of started) s.kill();
  await nats?.dispose();
});

async function gatewayEnv(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    NATS_URL: nats.url,
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: String(await freePort()),
    HTTP_PORT: String(await freePort()),
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

async function ready(httpPort: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error('gateway did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('gateway process', () => {
  it('stops at start on a bad configuration, listing every problem', async () => {
    const result = await runScript('gateway/main.ts', [], {
      MQTT_PORT: 'abc',
      HTTP_PORT: '99999',
      AUTH_MODE: 'maybe',
      MQTTS_PORT: '8883',
      // Checked by the primary before it forks anything.
      GATEWAY_WORKERS: '0',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('invalid configuration');
    for (const name of ['MQTT_PORT', 'HTTP_PORT', 'AUTH_MODE', 'MQTTS_PORT', 'GATEWAY_WORKERS'])
      expect(result.stderr).toContain(`- ${name}:`);
  });

  // With workers, the MQTT port is bound by the primary for them; the worker that is refused says so.
  it.each(['1', '2'])(
    'says in one line which port is already in use (GATEWAY_WORKERS=%s)',
    async (workers) => {
      const blocker: Server = createServer();
      await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
      const port = (blocker.address() as { port: number }).port;
      try {
        const result = await runScript(
          'gateway/main.ts',
          [],
          await gatewayEnv({ MQTT_PORT: String(port), GATEWAY_WORKERS: workers }),
        );
        expect(result.code).toBe(1);
        const lines = result.stderr.trim().split('\n');
        expect(lines.at(-1)).toBe(
          `gateway: MQTT_PORT: port ${port} is already in use (set another with the MQTT_PORT setting, or stop what holds it)`,
        );
      } finally {
        await new Promise((r) => blocker.close(r));
      }
    },
  );

  it('registers a device with the CLI, accepts it, and drains and exits 0 on SIGTERM', {
    timeout: 90_000,
  }, async () => {
    const env = await gatewayEnv();
    const added = await runScript(
      'gateway/devices-cli.ts',
      ['add', 'cli-1', '--tenant', 'acme', '--label', 'type=pump', '--json'],
      env,
    );
    expect(added.code).toBe(0);
    const device = JSON.parse(added.stdout) as { id: string; tenant: string; secret: string; labels: object };
    expect(device).toMatchObject({ id: 'cli-1', tenant: 'acme', labels: { type: 'pump' } });
    expect(device.secret).toMatch(/^[A-Za-z0-9_-]{32}$/);

    const again = await runScript('gateway/devices-cli.ts', ['add', 'cli-1', '--tenant', 'acme'], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("device 'cli-1' already exists");

    const listed = await runScript('gateway/devices-cli.ts', ['list', '--json'], env);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ id: 'cli-1', disabled: false })]);
    expect(listed.stdout).not.toContain(device.secret);
    expect(listed.stdout).not.toContain('secretHash');

    const gw = startScript('gateway/main.ts', [], env);
    started.push(gw);
    await ready(env.HTTP_PORT!);
    const client = await connectDevice(Number(env.MQTT_PORT), device);
    await client.publishAsync(telemetryTopic('cli-1'), '{"metrics":{"flow":3.5}}', { qos: 1 });

    // With the device still connected, as in production: SIGTERM must not wait for it to leave.
    const closed = closedByBroker(client, 20_000);
    const signalled = Date.now();
    gw.kill('SIGTERM');
    const result = await gw.finished;
    await closed;
    expect(Date.now() - signalled).toBeLessThan(15_000);
    await client.endAsync(true);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('gateway stopped');
    expect(result.stdout).not.toContain(device.secret);

    const disabled = await runScript('gateway/devices-cli.ts', ['disable', 'cli-1'], env);
    expect(disabled.stdout.trim()).toBe('cli-1 disabled');
    const removed = await runScript('gateway/devices-cli.ts', ['remove', 'cli-1'], env);
    expect(removed.code).toBe(0);
    const missing = await runScript('gateway/devices-cli.ts', ['enable', 'cli-1'], env);
    expect(missing.stderr).toContain("no device 'cli-1'");
  });

  it('explains CLI usage mistakes', async () => {
    const result = await runScript('gateway/devices-cli.ts', ['add', 'x'], { NATS_URL: nats.url });
    expect(result.code).toBe(64);
    expect(result.stderr).toContain('add needs --tenant');
    expect(result.stderr).toContain('usage: npm run devices');
  });
});
