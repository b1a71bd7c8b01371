import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  commandsFilterOwner,
  commandsSubject,
  parseCommandsSubject,
  parseDeviceTopic,
  partitionOf,
  TELEMETRY_PARTITIONS,
  telemetryPartitionFilter,
  telemetrySubject,
} from '../../contract/index.js';

describe('device topics', () => {
  it('parses the contract topics', () => {
    expect(parseDeviceTopic('devices/dev-1/telemetry')).toEqual({
      kind: 'telemetry',
      deviceId: 'dev-1',
      encoding: 'json',
    });
    expect(parseDeviceTopic('devices/dev-1/telemetry/cbor')).toEqual({
      kind: 'telemetry',
      deviceId: 'dev-1',
      encoding: 'cbor',
    });
    expect(parseDeviceTopic('devices/dev-1/status')).toEqual({ kind: 'status', deviceId: 'dev-1' });
    expect(parseDeviceTopic('devices/dev-1/commands/reboot')).toEqual({
      kind: 'commands',
      deviceId: 'dev-1',
      path: ['reboot'],
    });
    expect(parseDeviceTopic('devices/dev-1/telemetry/extra')).toEqual({ kind: 'other', deviceId: 'dev-1' });
    expect(parseDeviceTopic('devices/dev-1/telemetry/cbor/x')).toEqual({ kind: 'other', deviceId: 'dev-1' });
  });

  it.each([
    'devices/dev.1/telemetry',
    'devices//telemetry',
    'device/dev-1/telemetry',
    'devices/dev-1',
    'x',
    '',
  ])('refuses %j', (topic) => expect(parseDeviceTopic(topic)).toBeUndefined());

  it('gives a commands filter an owner only inside that device’s commands tree', () => {
    expect(commandsFilterOwner('devices/a/commands/#')).toBe('a');
    expect(commandsFilterOwner('devices/a/commands/+/x')).toBe('a');
    expect(commandsFilterOwner('devices/+/commands/#')).toBeUndefined();
    expect(commandsFilterOwner('devices/a/telemetry')).toBeUndefined();
    expect(commandsFilterOwner('#')).toBeUndefined();
    expect(commandsFilterOwner('devices/#')).toBeUndefined();
  });

  it('never throws on arbitrary topics', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (topic) => {
        const parsed = parseDeviceTopic(topic);
        if (parsed) expect(topic.startsWith(`devices/${parsed.deviceId}/`)).toBe(true);
      }),
    );
  });
});

describe('subjects', () => {
  it('puts a device on one stable partition within range', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[a-z0-9_-]{1,32}$/),
        fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
        (t, d) => {
          const p = partitionOf(t, d);
          expect(p).toBeGreaterThanOrEqual(0);
          expect(p).toBeLessThan(TELEMETRY_PARTITIONS);
          expect(partitionOf(t, d)).toBe(p);
          expect(telemetrySubject(t, d)).toBe(`telemetry.${p}.${t}.${d}`);
        },
      ),
    );
  });

  it('spreads a fleet over all partitions', () => {
    const counts = new Array(TELEMETRY_PARTITIONS).fill(0);
    for (let i = 0; i < 1600; i++) counts[partitionOf('acme', `sensor-${i}`)]++;
    expect(Math.min(...counts)).toBeGreaterThan(60);
    expect(Math.max(...counts)).toBeLessThan(140);
  });

  it('filters one partition', () => {
    expect(telemetryPartitionFilter(3)).toBe('telemetry.3.>');
  });

  it('round-trips command subjects', () => {
    expect(parseCommandsSubject(commandsSubject('acme', 'd1', ['cfg', 'set']))).toEqual({
      tenant: 'acme',
      deviceId: 'd1',
      path: ['cfg', 'set'],
    });
    expect(parseCommandsSubject('commands.acme')).toBeUndefined();
  });
});
