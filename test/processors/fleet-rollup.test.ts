import { describe, expect, it } from 'vitest';
import type { DeviceWindow } from '../../contract/event.js';
import { GROUP_ALL } from '../../contract/measurements.js';
import { FleetRollup, type FleetRow } from '../../processors/rollups/fleet-rollup.js';

const S = 1_000;
const H = 60 * S;
const T0 = Date.parse('2026-11-28T00:00:00.000Z');
const END = T0 + 10 * S;

function dw(deviceId: string, values: number[], extra: Partial<DeviceWindow> = {}): DeviceWindow {
  const sum = values.reduce((a, b) => a + b, 0);
  return {
    tenant: 'acme',
    deviceId,
    labels: {},
    metric: 'temperature',
    window: '10s',
    windowMs: 10 * S,
    startMs: T0,
    count: values.length,
    sum,
    min: Math.min(...values),
    max: Math.max(...values),
    mean: sum / values.length,
    final: false,
    ...extra,
  };
}

const byGroup = (rows: FleetRow[], group = GROUP_ALL, value = GROUP_ALL) =>
  rows.find((r) => r.group === group && r.groupValue === value);

describe('FleetRollup', () => {
  it('merges two devices: devices, count, mean over every reading, min, max', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    expect(rollup.add(dw('d1', [1, 2, 3]), END)).toBe('accepted');
    expect(rollup.add(dw('d2', [10, 20]), END + S)).toBe('accepted');
    expect(rollup.collect(END + 2 * S)).toEqual([
      {
        tenant: 'acme',
        metric: 'temperature',
        window: '10s',
        startMs: T0,
        group: GROUP_ALL,
        groupValue: GROUP_ALL,
        devices: 2,
        count: 5,
        mean: 36 / 5,
        min: 1,
        max: 20,
      },
    ]);
  });

  it('replaces a device window with its correction, and counts a repeated emission once', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    rollup.add(dw('d1', [1, 2, 3]), END);
    rollup.add(dw('d2', [10, 20]), END);
    rollup.collect(END);
    rollup.add(dw('d1', [1, 2, 3, 6]), END + 2 * S); // a late reading corrected d1
    rollup.add(dw('d1', [1, 2, 3, 6], { final: true }), END + 5 * S); // final: same values
    rollup.add(dw('d1', [1, 2, 3, 6], { final: true }), END + 6 * S); // replayed by a new partition owner
    expect(rollup.collect(END + 7 * S)).toEqual([
      expect.objectContaining({ devices: 2, count: 6, mean: 42 / 6, min: 1, max: 20 }),
    ]);
  });

  it('keeps one group per promoted label value besides all, and ignores other labels', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    rollup.add(dw('d1', [1], { labels: { type: 'boiler', site: 'paris', floor: '2' } }), END);
    rollup.add(dw('d2', [3], { labels: { type: 'boiler', site: 'lyon' } }), END);
    rollup.add(dw('d3', [8], { labels: { type: 'pump' } }), END);
    rollup.add(dw('other', [100], { tenant: 'globex', labels: { type: 'boiler' } }), END);
    const rows = rollup.collect(END);
    const acme = rows.filter((r) => r.tenant === 'acme');
    expect(acme.map((r) => `${r.group}=${r.groupValue}:${r.devices}`).sort()).toEqual([
      'all=all:3',
      'site=lyon:1',
      'site=paris:1',
      'type=boiler:2',
      'type=pump:1',
    ]);
    expect(byGroup(acme, 'type', 'boiler')).toMatchObject({ count: 2, mean: 2, min: 1, max: 3 });
    expect(byGroup(acme)).toMatchObject({ devices: 3, count: 3, mean: 4, min: 1, max: 8 });
    expect(rows.filter((r) => r.tenant === 'globex')).toHaveLength(2);
  });

  it('moves a device to its new group when a later emission carries another label value', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    rollup.add(dw('d1', [1], { labels: { site: 'paris' } }), END);
    rollup.add(dw('d2', [5], { labels: { site: 'paris' } }), END);
    rollup.collect(END);
    rollup.add(dw('d1', [1], { labels: { site: 'lyon' } }), END + S);
    const rows = rollup.collect(END + S);
    expect(byGroup(rows, 'site', 'paris')).toMatchObject({ devices: 1, count: 1, mean: 5 });
    expect(byGroup(rows, 'site', 'lyon')).toMatchObject({ devices: 1, count: 1, mean: 1 });
    expect(byGroup(rows)).toMatchObject({ devices: 2, count: 2, mean: 3 });
  });

  it('skips device windows stored farther than the horizon from their end', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    expect(rollup.add(dw('d1', [1]), END + H)).toBe('accepted'); // the bound itself is within
    expect(rollup.add(dw('late', [1]), END + H + 1)).toBe('skipped'); // e.g. hours-old data replayed
    expect(rollup.add(dw('early', [1]), END - H - 1)).toBe('skipped');
    expect(rollup.collect(END + H)).toEqual([expect.objectContaining({ devices: 1 })]);
  });

  it('drops a fleet window once time passes its end + horizon, and never writes it again', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    rollup.add(dw('d1', [1]), END);
    rollup.expire(END + H);
    expect(rollup.size).toBe(1); // still within retention at end + H exactly
    rollup.expire(END + H + 1);
    expect(rollup.size).toBe(0);
    // A message stored in time but processed late (or replayed from the middle) rebuilds a partial
    // window: it is not written, even when collect is given an earlier time.
    expect(rollup.add(dw('d2', [2]), END + 30 * S)).toBe('accepted');
    expect(rollup.collect(END)).toEqual([]);
    expect(rollup.size).toBe(0);
  });

  it('collects only the windows changed since the last collect, and dirty ones within retention', () => {
    const rollup = new FleetRollup({ horizonMs: H });
    rollup.add(dw('d1', [1]), END);
    rollup.add(dw('d1', [2], { startMs: T0 + 10 * S }), END + 10 * S);
    expect(rollup.collect(END + 10 * S)).toHaveLength(2);
    expect(rollup.collect(END + 10 * S)).toEqual([]);
    rollup.add(dw('d2', [3], { startMs: T0 + 10 * S }), END + 10 * S);
    expect(rollup.collect(END + 11 * S)).toEqual([
      expect.objectContaining({ startMs: T0 + 10 * S, devices: 2, mean: 2.5 }),
    ]);
    rollup.add(dw('d2', [3]), END + 20 * S); // changes the first window, which then expires
    expect(rollup.collect(END + H + 1)).toEqual([]);
  });

  it('holds at most FLEET_MAX_ROWS_PER_TENANT rows per tenant and window end, counting what it leaves out', () => {
    const hits: string[] = [];
    const rollup = new FleetRollup({ horizonMs: H, maxRowsPerTenant: 3, onLimit: (l) => hits.push(l) });
    rollup.add(dw('d1', [1], { labels: { type: 'boiler' } }), END); // all, type=boiler
    rollup.add(dw('d2', [2], { labels: { type: 'pump', site: 'oslo' } }), END); // type=pump; site=oslo refused
    rollup.add(dw('d3', [3], { metric: 'humidity' }), END); // a new metric: refused
    rollup.add(dw('d4', [4], { tenant: 'globex' }), END); // another tenant has its own rows
    rollup.add(dw('d5', [5], { startMs: T0 + 10 * S }), END + 10 * S); // another window end too
    expect(hits).toEqual(['FLEET_MAX_ROWS_PER_TENANT', 'FLEET_MAX_ROWS_PER_TENANT']);
    const rows = rollup.collect(END + 10 * S);
    const first = rows.filter((r) => r.tenant === 'acme' && r.startMs === T0);
    expect(first.map((r) => `${r.metric} ${r.group}=${r.groupValue}:${r.devices}`).sort()).toEqual([
      'temperature all=all:2',
      'temperature type=boiler:1',
      'temperature type=pump:1',
    ]);
    expect(rows.filter((r) => r.tenant === 'globex')).toHaveLength(1);
    expect(rows.filter((r) => r.startMs === T0 + 10 * S)).toHaveLength(1);
    // A row freed by a device leaving its group makes room again.
    rollup.add(dw('d2', [2], { labels: { site: 'oslo' } }), END + S);
    expect(byGroup(rollup.collect(END + S), 'site', 'oslo')).toMatchObject({ devices: 1 });
  });
});
