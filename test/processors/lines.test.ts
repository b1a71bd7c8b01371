import { InfluxDB, Point, type WriteApi } from '@influxdata/influxdb-client';
import { afterAll, describe, expect, it } from 'vitest';
import type { CanonicalEvent } from '../../contract/event.js';
import type { AlertTransition } from '../../contract/index.js';
import { AGGREGATE_FIELDS } from '../../contract/measurements.js';
import { PointInvalidError } from '../../processors/errors.js';
import {
  aggregateLine,
  alertLine,
  deviceStatusLine,
  fleetLine,
  telemetryLine,
  WRITE_PRECISION,
} from '../../processors/sink/lines.js';
import type { WindowResult } from '../../processors/windows/device-windows.js';

// The client's own Point serialisation, as the reference the hand-built lines must equal. Nothing is
// sent: the API is disposed unused.
const api: WriteApi = new InfluxDB({ url: 'http://127.0.0.1:9' }).getWriteApi(
  'iot',
  'telemetry',
  WRITE_PRECISION,
);
afterAll(() => {
  api.dispose();
});

function event(overrides: Partial<CanonicalEvent> = {}): CanonicalEvent {
  return {
    id: 'evt-1',
    tenant: 'acme',
    deviceId: 'dev-1',
    ts: '2024-05-01T12:00:00.123Z',
    receivedAt: '2024-05-01T12:00:00.200Z',
    schemaVersion: 1,
    metrics: { temperature: { value: 21, unit: 'Cel' }, humidity: { value: 40.5, unit: '%' } },
    labels: { type: 'thermo', site: 'plant-1' },
    ...overrides,
  };
}

const line = (e: CanonicalEvent, promoted?: readonly string[]) => telemetryLine(e, promoted);

describe('telemetryLine', () => {
  it('writes measurement telemetry, sorted tags, float fields and the event time in ms', () => {
    expect(WRITE_PRECISION).toBe('ms');
    expect(line(event())).toBe(
      'telemetry,device=dev-1,site=plant-1,tenant=acme,type=thermo humidity=40.5,temperature=21 1714564800123',
    );
  });

  it('escapes spaces, commas and equals signs in tag values and field names', () => {
    const e = event({
      tenant: 'acme corp',
      deviceId: 'dev,1',
      labels: { site: 'hall=b 2', type: 'a,b' },
      metrics: { 'flow rate': { value: 1.25, unit: 'L/min' } },
    });
    expect(line(e)).toBe(
      'telemetry,device=dev\\,1,site=hall\\=b\\ 2,tenant=acme\\ corp,type=a\\,b flow\\ rate=1.25 1714564800123',
    );
  });

  it('writes every number as a float: no integer suffix, even for whole values', () => {
    const e = event({ metrics: { count: { value: 3, unit: '1' }, big: { value: 1e21, unit: '1' } } });
    const fields = line(e)!.split(' ')[1]!;
    expect(fields).toBe('big=1e+21,count=3');
    expect(fields).not.toMatch(/\d[iu](,|$)/);
  });

  it('promotes only the configured labels the event has, and leaves empty ones out', () => {
    const e = event({ labels: { site: '', type: 'thermo', owner: 'bob' } });
    expect(line(e)).toBe(
      'telemetry,device=dev-1,tenant=acme,type=thermo humidity=40.5,temperature=21 1714564800123',
    );
    expect(line(e, ['owner'])).toMatch(/^telemetry,device=dev-1,owner=bob,tenant=acme /);
  });

  it('keeps millisecond precision and converts zoned times to UTC', () => {
    expect(line(event({ ts: '2024-05-01T14:00:00.999+02:00' }))).toMatch(/ 1714564800999$/);
  });

  it('gives no point for an event without metrics', () => {
    expect(telemetryLine(event({ metrics: {} }))).toBeUndefined();
  });

  it('refuses what would corrupt a line, with a stable code', () => {
    const bad = [
      event({ deviceId: 'dev\\' }),
      event({ metrics: { t: { value: Number.NaN, unit: 'Cel' } } }),
      event({ ts: 'not a date' }),
    ];
    for (const e of bad) {
      expect(() => telemetryLine(e)).toThrow(PointInvalidError);
      try {
        telemetryLine(e);
      } catch (err) {
        expect((err as PointInvalidError).code).toBe('POINT_INVALID');
        expect((err as PointInvalidError).eventId).toBe('evt-1');
      }
    }
  });
});

describe('lines equal what the client Point would write', () => {
  it('telemetry, with characters that need escaping', () => {
    const e = event({
      tenant: 'acme corp',
      deviceId: 'dev,1',
      labels: { site: 'hall=b 2', type: 'a,b' },
      metrics: { 'flow rate': { value: 1.25, unit: 'L/min' }, a: { value: -3e-7, unit: '1' } },
    });
    const point = new Point('telemetry')
      .tag('tenant', e.tenant)
      .tag('device', e.deviceId)
      .tag('site', 'hall=b 2')
      .tag('type', 'a,b')
      .floatField('flow rate', 1.25)
      .floatField('a', -3e-7)
      .timestamp(new Date(e.ts));
    expect(telemetryLine(e)).toBe(point.toLineProtocol(api));
  });

  it('telemetry_agg', () => {
    const values = Object.fromEntries(
      AGGREGATE_FIELDS.map((f, i) => [f, i * 1.5 - 2]),
    ) as WindowResult['values'];
    const r: WindowResult = {
      tenant: 'acme',
      deviceId: 'd 1',
      metric: 'temperature',
      windowMs: 60_000,
      startMs: 1_714_564_800_000,
      values,
      final: true,
    };
    const point = new Point('telemetry_agg')
      .tag('tenant', 'acme')
      .tag('device', 'd 1')
      .tag('metric', 'temperature')
      .tag('window', '1m')
      .timestamp(new Date(r.startMs));
    for (const f of AGGREGATE_FIELDS) point.floatField(f, values[f]);
    expect(aggregateLine(r)).toBe(point.toLineProtocol(api));
  });

  it('alerts, with a quoted state and a non-finite value written as 0', () => {
    const t = {
      tenant: 'acme',
      deviceId: 'd1',
      rule: 'too hot',
      severity: 'critical',
      state: 'firing',
      value: Number.POSITIVE_INFINITY,
      atMs: 1_714_564_800_123,
    } as AlertTransition;
    const point = new Point('alerts')
      .tag('tenant', 'acme')
      .tag('device', 'd1')
      .tag('rule', 'too hot')
      .tag('severity', 'critical')
      .floatField('value', 0)
      .stringField('state', 'firing')
      .timestamp(new Date(t.atMs));
    expect(alertLine(t)).toBe(point.toLineProtocol(api));
  });

  it('fleet_agg', () => {
    const row = {
      tenant: 'acme',
      metric: 'temperature',
      window: '10s',
      startMs: 1_714_564_800_000,
      group: 'site',
      groupValue: 'hall b',
      devices: 3,
      count: 36,
      mean: 15.5,
      min: -1,
      max: 31,
    };
    const point = new Point('fleet_agg')
      .tag('tenant', 'acme')
      .tag('metric', 'temperature')
      .tag('window', '10s')
      .tag('group', 'site')
      .tag('group_value', 'hall b')
      .floatField('devices', 3)
      .floatField('count', 36)
      .floatField('mean', 15.5)
      .floatField('min', -1)
      .floatField('max', 31)
      .timestamp(new Date(row.startMs));
    expect(fleetLine(row)).toBe(point.toLineProtocol(api));
  });

  it('fleet_agg refuses a group value ending in a backslash, which would escape the separator', () => {
    const row = {
      tenant: 'acme',
      metric: 'temperature',
      window: '10s',
      startMs: 1_714_564_800_000,
      group: 'site',
      groupValue: 'hall\\',
      devices: 1,
      count: 1,
      mean: 1,
      min: 1,
      max: 1,
    };
    expect(() => fleetLine(row)).toThrow(PointInvalidError);
  });

  it('device_status', () => {
    const row = {
      tenant: 'acme',
      deviceId: 'd1',
      online: false,
      reason: 'gateway_lost',
      atMs: 1_714_564_800_5,
    };
    const point = new Point('device_status')
      .tag('tenant', 'acme')
      .tag('device', 'd1')
      .floatField('online', 0)
      .stringField('reason', 'gateway_lost')
      .timestamp(new Date(row.atMs));
    expect(deviceStatusLine(row)).toBe(point.toLineProtocol(api));
  });
});
