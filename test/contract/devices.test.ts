import { describe, expect, it } from 'vitest';
import { DeviceRecord, isChildOf } from '../../contract/devices.js';
import { isBridgeStateTopic, isChildrenCommandsFilter } from '../../contract/topics.js';

const at = '2026-12-06T12:00:00.000Z';
const record = (id: string, over: Partial<DeviceRecord> = {}): DeviceRecord => ({
  id,
  tenant: 'acme',
  secretHash: '',
  labels: {},
  disabled: false,
  createdAt: at,
  updatedAt: at,
  ...over,
});

describe('DeviceRecord', () => {
  it('still reads a record written before gateway devices existed', () => {
    const old = {
      id: 'dev-1',
      tenant: 'acme',
      secretHash: 'x',
      labels: {},
      disabled: false,
      createdAt: at,
      updatedAt: at,
    };
    expect(DeviceRecord.parse(old)).toEqual(old);
  });

  it('takes a gateway role of any device of its tenant, or of a list', () => {
    expect(DeviceRecord.safeParse(record('g', { gateway: { children: 'any' } })).success).toBe(true);
    expect(DeviceRecord.safeParse(record('g', { gateway: { children: ['a', 'b'] } })).success).toBe(true);
    expect(DeviceRecord.safeParse(record('g', { gateway: { children: ['a/b'] } })).success).toBe(false);
    expect(DeviceRecord.safeParse({ ...record('g'), gateway: { children: 'some' } }).success).toBe(false);
  });
});

describe('isChildOf', () => {
  const any = record('site-1', { gateway: { children: 'any' } });
  const listed = record('site-2', { gateway: { children: ['a', 'b'] } });
  it('speaks for devices registered through it (any), or listed', () => {
    expect(isChildOf(record('a', { labels: { via: 'site-1' } }), any)).toBe(true);
    expect(isChildOf(record('a'), listed)).toBe(true);
  });
  it.each([
    ['a direct device', record('d', { secretHash: 'scrypt$…' }), any],
    ["another gateway device's child", record('a', { labels: { via: 'site-9' } }), any],
    ["another tenant's device", record('a', { tenant: 'other', labels: { via: 'site-1' } }), any],
    ['a disabled child', record('a', { disabled: true, labels: { via: 'site-1' } }), any],
    ['itself', any, any],
    ['a device not listed', record('c', { labels: { via: 'site-2' } }), listed],
    ['anything, not being a gateway device', record('a', { labels: { via: 'dev-1' } }), record('dev-1')],
  ])('never for %s', (_what, child, gateway) => {
    expect(isChildOf(child, gateway)).toBe(false);
  });
});

describe('gateway device topics', () => {
  it("recognises a mosquitto bridge's notification topic, and nothing like it", () => {
    expect(isBridgeStateTopic('$SYS/broker/connection/site-1/state')).toBe(true);
    for (const topic of [
      '$SYS/broker/connection/+/state',
      '$SYS/broker/connection//state',
      '$SYS/broker/connection/site-1/state/x',
      '$SYS/broker/uptime',
      'devices/site-1/status',
    ])
      expect(isBridgeStateTopic(topic)).toBe(false);
  });

  it("recognises a filter of every device's commands", () => {
    expect(isChildrenCommandsFilter('devices/+/commands/#')).toBe(true);
    expect(isChildrenCommandsFilter('devices/+/commands/reboot')).toBe(true);
    expect(isChildrenCommandsFilter('devices/+/telemetry')).toBe(false);
    expect(isChildrenCommandsFilter('devices/#')).toBe(false);
    expect(isChildrenCommandsFilter('#')).toBe(false);
  });
});
