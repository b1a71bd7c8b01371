import { mkdtempSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { configProblems } from '../kit/config.js';

const problemsOf = (env: Record<string, string>) =>
  configProblems(() => loadConfig(GatewayConfigSchema, env));

describe('gateway config', () => {
  it('has the documented defaults and is frozen', () => {
    const c = loadConfig(GatewayConfigSchema, {});
    expect(c).toMatchObject({
      MQTT_PORT: 1883,
      MQTT_WS_PORT: 8083,
      NATS_URL: 'nats://127.0.0.1:4222',
      HTTP_PORT: 8080,
      AUTH_MODE: 'registry',
      MAX_PAYLOAD_BYTES: 65_536,
      LOG_LEVEL: 'info',
    });
    expect(c.MQTTS_PORT).toBeUndefined();
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("runs a worker per core by default, and leaves room in GATEWAY_ID for the workers' suffix", () => {
    expect(loadConfig(GatewayConfigSchema, {}).GATEWAY_WORKERS).toBe(availableParallelism());
    const long = 'g'.repeat(25);
    expect(problemsOf({ GATEWAY_ID: long, GATEWAY_WORKERS: '2' })).toEqual([
      expect.stringMatching(/^GATEWAY_ID: at most 24 characters with GATEWAY_WORKERS above 1/),
    ]);
    expect(loadConfig(GatewayConfigSchema, { GATEWAY_ID: long, GATEWAY_WORKERS: '1' }).GATEWAY_ID).toBe(long);
    expect(problemsOf({ GATEWAY_WORKERS: '0' })).toEqual([expect.stringMatching(/^GATEWAY_WORKERS: /)]);
  });

  it('lists every problem at once, naming the variable and the value given', () => {
    const problems = problemsOf({
      MQTT_PORT: 'abc',
      HTTP_PORT: '70000',
      AUTH_MODE: 'none',
      NATS_URL: 'localhost:4222',
      LOG_LEVEL: 'loud',
    });
    expect(problems).toHaveLength(5);
    expect(problems.join('\n')).toMatch(/MQTT_PORT: .*\(got "abc"\)/);
    expect(problems.join('\n')).toMatch(/HTTP_PORT: .*\(got "70000"\)/);
    expect(problems.join('\n')).toMatch(/AUTH_MODE: .*\(got "none"\)/);
    expect(problems.join('\n')).toMatch(/NATS_URL: .*nats:\/\/host:port/);
    expect(problems.join('\n')).toMatch(/LOG_LEVEL/);
  });

  it('takes a Sparkplug host id without topic wildcards or levels, or none', () => {
    expect(loadConfig(GatewayConfigSchema, { SPARKPLUG_HOST_ID: 'none' }).SPARKPLUG_HOST_ID).toBe('none');
    expect(loadConfig(GatewayConfigSchema, {}).SPARKPLUG_HOST_ID).toBe('iot-gateway');
    for (const bad of ['a/b', 'scada+', '#', 'two words'])
      expect(() => loadConfig(GatewayConfigSchema, { SPARKPLUG_HOST_ID: bad })).toThrow(/SPARKPLUG_HOST_ID/);
  });

  it('needs the TLS settings together', () => {
    expect(problemsOf({ MQTTS_PORT: '8883' })).toEqual([
      expect.stringMatching(/MQTTS_PORT: the TLS listener needs/),
    ]);
    expect(problemsOf({ MQTTS_PORT: '8883', TLS_CERT_FILE: 'c', TLS_KEY_FILE: 'k' })).toEqual([]);
  });

  it('keeps the payload limit below the frame limit', () => {
    expect(problemsOf({ MAX_PAYLOAD_BYTES: '2000000', DEVICE_BYTES_BURST: '2000000' })).toEqual([
      expect.stringMatching(/MAX_PAYLOAD_BYTES: must be below/),
    ]);
  });

  it('lets one largest payload through the byte budget, and a device no more metrics than its tenant', () => {
    expect(problemsOf({ MAX_PAYLOAD_BYTES: '300000', MAX_PACKET_BYTES: '400000' })).toEqual([
      expect.stringMatching(/DEVICE_BYTES_BURST: must be at least MAX_PAYLOAD_BYTES/),
    ]);
    expect(
      problemsOf({ MAX_PAYLOAD_BYTES: '300000', MAX_PACKET_BYTES: '400000', DEVICE_MAX_BYTES_PER_SEC: '0' }),
    ).toEqual([]);
    expect(problemsOf({ DEVICE_MAX_METRICS: '20', TENANT_MAX_METRICS: '10' })).toEqual([
      expect.stringMatching(/DEVICE_MAX_METRICS: must not exceed TENANT_MAX_METRICS/),
    ]);
    expect(problemsOf({ DEDUP_MAX_PUBLISHES: '100', MAX_IN_FLIGHT_PER_CLIENT: '100' })).toEqual([
      expect.stringMatching(/DEDUP_MAX_PUBLISHES: must hold/),
    ]);
    expect(
      problemsOf({ SPARKPLUG_MAX_METRICS_PER_BIRTH: '600', SPARKPLUG_MAX_METRICS_PER_NODE: '500' }),
    ).toEqual([
      expect.stringMatching(
        /SPARKPLUG_MAX_METRICS_PER_BIRTH: must not exceed SPARKPLUG_MAX_METRICS_PER_NODE/,
      ),
    ]);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig(GatewayConfigSchema, { MQTT_PORT: '' }).MQTT_PORT).toBe(1883);
  });

  it('reads CONFIG_FILE, lets the environment win, and refuses unknown keys in the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'gateway.json');
    writeFileSync(file, JSON.stringify({ MQTT_PORT: 1999, HTTP_PORT: 9000 }));
    expect(loadConfig(GatewayConfigSchema, { CONFIG_FILE: file, HTTP_PORT: '9001' })).toMatchObject({
      MQTT_PORT: 1999,
      HTTP_PORT: 9001,
    });
    writeFileSync(file, JSON.stringify({ MQTT_PROT: 1999 }));
    expect(problemsOf({ CONFIG_FILE: file })).toEqual([expect.stringMatching(/MQTT_PROT: not a setting/)]);
    expect(problemsOf({ CONFIG_FILE: join(dir, 'missing.json') })).toEqual([
      expect.stringMatching(/cannot read/),
    ]);
  });
});
