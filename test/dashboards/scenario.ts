import type { CanonicalEvent } from '../../contract/event.js';
import type { AlertTransition } from '../../contract/index.js';
import { deviceWindow } from '../../processors/effects.js';
import type { DeviceStatusRow } from '../../processors/presence/presence-tracker.js';
import { FleetRollup } from '../../processors/rollups/fleet-rollup.js';
import {
  aggregateLine,
  alertLine,
  deviceStatusLine,
  fleetLine,
  telemetryLine,
} from '../../processors/sink/lines.js';
import { alignDown, DeviceWindows, type WindowResult } from '../../processors/windows/device-windows.js';

/**
 * A fixed fleet over the last ~30 minutes, turned into line protocol by the processors' own code:
 * raw readings through `telemetryLine`, windows through `DeviceWindows` (10 s and 1 m, as the
 * processors' defaults) and `aggregateLine`, fleet rows through `FleetRollup` and `fleetLine`,
 * alert transitions and presence changes through `alertLine` and `deviceStatusLine`. Only the
 * transitions and presence rows are written by hand: they come from rules and gateways, which this
 * scenario has no use for.
 *
 * What the dashboards' queries are expected to find in it, relative to now:
 * - tenant `acme`: therm-01, therm-02 (thermometers, sites plant-1 and plant-2), meter-01 (meter);
 *   tenant `globex`: therm-01 (thermometer, site hq) and gw-07 (no labels: only in group `all`).
 * - acme/therm-02 disconnected from −12 min to −7 min (no readings meanwhile); globex/gw-07 lost
 *   since −4 min.
 * - alerts: acme/therm-02 `too-hot` fired and resolved, `humidity-high` still firing; acme/therm-01
 *   `too-hot` firing; acme/meter-01 `power-spike` fired and resolved; globex/gw-07 `battery-low`
 *   firing.
 */
export const READING_INTERVAL_MS = 10_000;
export const SCENARIO_SPAN_MS = 30 * 60_000;
const WINDOW_SETTINGS = { sizesMs: [10_000, 60_000], allowedLatenessMs: 5_000, idleTimeoutMs: 30_000 };

interface ScenarioDevice {
  tenant: string;
  deviceId: string;
  labels: Record<string, string>;
  /** Metric → canonical unit. */
  metrics: Record<string, string>;
  /** Offline from/to, in ms before now (`to` undefined: still offline). */
  offline?: { fromAgoMs: number; toAgoMs?: number; reason: string };
}

const MINUTE_MS = 60_000;

export const SCENARIO_DEVICES: readonly ScenarioDevice[] = [
  {
    tenant: 'acme',
    deviceId: 'therm-01',
    labels: { type: 'thermometer', site: 'plant-1' },
    metrics: { temperature: 'Cel', humidity: '%' },
  },
  {
    tenant: 'acme',
    deviceId: 'therm-02',
    labels: { type: 'thermometer', site: 'plant-2' },
    metrics: { temperature: 'Cel', humidity: '%' },
    offline: { fromAgoMs: 12 * MINUTE_MS, toAgoMs: 7 * MINUTE_MS, reason: 'disconnected' },
  },
  {
    tenant: 'acme',
    deviceId: 'meter-01',
    labels: { type: 'meter', site: 'plant-1' },
    metrics: { power: 'W', voltage: 'V' },
  },
  {
    tenant: 'globex',
    deviceId: 'therm-01',
    labels: { type: 'thermometer', site: 'hq' },
    metrics: { temperature: 'Cel' },
  },
  {
    tenant: 'globex',
    deviceId: 'gw-07',
    labels: {},
    metrics: { temperature: 'Cel', battery: '%' },
    offline: { fromAgoMs: 4 * MINUTE_MS, reason: 'lost' },
  },
];

export const SCENARIO_TENANTS = [...new Set(SCENARIO_DEVICES.map((d) => d.tenant))];

/** A smooth, deterministic value per device, metric and time: enough spread for min/max bands. */
function valueAt(deviceIndex: number, metric: string, tsMs: number): number {
  const base: Record<string, number> = {
    temperature: 21,
    humidity: 45,
    power: 1200,
    voltage: 230,
    battery: 80,
  };
  const phase = tsMs / 120_000 + deviceIndex;
  const wobble = Math.sin(phase) * 3 + Math.cos(tsMs / 17_000) * 0.5;
  return Math.round(((base[metric] ?? 10) + deviceIndex + wobble) * 100) / 100;
}

function alerts(nowMs: number): AlertTransition[] {
  const at = (agoMinutes: number) => nowMs - agoMinutes * MINUTE_MS;
  const t = (
    tenant: string,
    deviceId: string,
    rule: string,
    severity: AlertTransition['severity'],
    state: AlertTransition['state'],
    value: number,
    atMs: number,
  ): AlertTransition => ({
    tenant,
    deviceId,
    rule,
    severity,
    state,
    value,
    atMs,
    message: `${rule} ${state}`,
  });
  return [
    t('acme', 'therm-02', 'too-hot', 'critical', 'firing', 82.5, at(20)),
    t('acme', 'therm-02', 'too-hot', 'critical', 'resolved', 74, at(15)),
    t('acme', 'therm-02', 'humidity-high', 'warning', 'firing', 71, at(5)),
    t('acme', 'therm-01', 'too-hot', 'critical', 'firing', 83, at(3)),
    t('acme', 'meter-01', 'power-spike', 'info', 'firing', 2400, at(25)),
    t('acme', 'meter-01', 'power-spike', 'info', 'resolved', 1300, at(24)),
    t('globex', 'gw-07', 'battery-low', 'warning', 'firing', 9, at(10)),
  ];
}

function statusRows(nowMs: number, startMs: number): DeviceStatusRow[] {
  const rows: DeviceStatusRow[] = [];
  for (const d of SCENARIO_DEVICES) {
    const row = (online: boolean, reason: string, atMs: number) =>
      rows.push({ tenant: d.tenant, deviceId: d.deviceId, online, reason, atMs });
    row(true, 'connected', startMs - MINUTE_MS);
    if (d.offline) {
      row(false, d.offline.reason, nowMs - d.offline.fromAgoMs);
      if (d.offline.toAgoMs !== undefined) row(true, 'connected', nowMs - d.offline.toAgoMs);
    }
  }
  return rows;
}

function isOffline(d: ScenarioDevice, nowMs: number, tsMs: number): boolean {
  if (!d.offline) return false;
  return (
    tsMs >= nowMs - d.offline.fromAgoMs &&
    (d.offline.toAgoMs === undefined || tsMs < nowMs - d.offline.toAgoMs)
  );
}

/** Every line the processors would have written for the scenario, ending at `nowMs`. */
export function scenarioLines(nowMs: number): string[] {
  const startMs = alignDown(nowMs - SCENARIO_SPAN_MS, MINUTE_MS);
  const endMs = nowMs - 5_000;
  const lines: string[] = [];
  const rollup = new FleetRollup();
  const windows = SCENARIO_DEVICES.map((d) => new DeviceWindows(d.tenant, d.deviceId, WINDOW_SETTINGS));
  const emit = (results: WindowResult[], streamTimeMs: number) => {
    for (const r of results) {
      lines.push(aggregateLine(r));
      rollup.add(deviceWindow(r), streamTimeMs);
    }
  };
  let seq = 0;
  for (let ts = startMs; ts <= endMs; ts += READING_INTERVAL_MS) {
    SCENARIO_DEVICES.forEach((d, i) => {
      if (isOffline(d, nowMs, ts)) return;
      const metrics: CanonicalEvent['metrics'] = {};
      for (const [name, unit] of Object.entries(d.metrics))
        metrics[name] = { value: valueAt(i, name, ts), unit };
      const event: CanonicalEvent = {
        id: `${d.tenant}-${d.deviceId}-${ts}`,
        tenant: d.tenant,
        deviceId: d.deviceId,
        ts: new Date(ts).toISOString(),
        receivedAt: new Date(ts + 50).toISOString(),
        schemaVersion: 1,
        metrics,
        labels: d.labels,
      };
      lines.push(telemetryLine(event)!);
      windows[i]!.add({ id: event.id, tsMs: ts, metrics, labels: d.labels }, ++seq, ts);
      emit(windows[i]!.collect(ts), ts);
    });
    // The rollup owner writes its changed rows about once a second; once per reading round will do.
    for (const row of rollup.collect(ts)) lines.push(fleetLine(row));
  }
  // Past the idle timeout every window is final, as when the fleet goes quiet.
  const quietMs = endMs + 2 * MINUTE_MS;
  for (const w of windows) emit(w.collect(quietMs), quietMs);
  for (const row of rollup.collect(quietMs)) lines.push(fleetLine(row));
  for (const t of alerts(nowMs)) lines.push(alertLine(t));
  for (const row of statusRows(nowMs, startMs)) lines.push(deviceStatusLine(row));
  return lines;
}
