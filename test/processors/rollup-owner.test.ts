import { type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { DeviceWindow } from '../../contract/event.js';
import { GROUP_ALL } from '../../contract/measurements.js';
import { WINDOWS_STREAM, windowsSubject } from '../../contract/subjects.js';
import { type FleetRow, fleetRowKey } from '../../processors/rollups/fleet-rollup.js';
import { RollupOwner, type RollupOwnerOptions } from '../../processors/rollups/rollup-owner.js';
import { ensureWindowsStream } from '../../processors/rollups/windows-stream.js';
import { alignDown } from '../../processors/windows/device-windows.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const S = 1_000;
const H = 60 * S;
const WINDOW_MS = 10 * S;
const log = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent');

let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const owners: RollupOwner[] = [];

/** What the owner wrote, the last row per fleet window kept as InfluxDB keeps it. */
class Collector {
  readonly written: FleetRow[] = [];
  readonly latest = new Map<string, FleetRow>();
  calls = 0;
  failures = 0;
  constructor(private failFirst = 0) {}
  readonly write = async (rows: FleetRow[]) => {
    this.calls++;
    if (this.failFirst > 0) {
      this.failFirst--;
      this.failures++;
      throw new Error('TSDB unavailable');
    }
    this.written.push(...rows);
    for (const r of rows) this.latest.set(fleetRowKey(r), r);
  };
  rowsOf(tenant: string): FleetRow[] {
    return [...this.latest.values()]
      .filter((r) => r.tenant === tenant)
      .sort((a, b) => fleetRowKey(a).localeCompare(fleetRowKey(b)));
  }
  row(tenant: string, startMs: number, group = GROUP_ALL, groupValue = GROUP_ALL): FleetRow | undefined {
    return this.latest.get(
      fleetRowKey({ tenant, metric: 'temperature', window: '10s', startMs, group, groupValue }),
    );
  }
}

function dw(
  tenant: string,
  deviceId: string,
  startMs: number,
  values: number[],
  labels: Record<string, string> = {},
): DeviceWindow {
  const sum = values.reduce((a, b) => a + b, 0);
  return {
    tenant,
    deviceId,
    labels,
    metric: 'temperature',
    window: '10s',
    windowMs: WINDOW_MS,
    startMs,
    count: values.length,
    sum,
    min: Math.min(...values),
    max: Math.max(...values),
    mean: sum / values.length,
    final: false,
  };
}

async function publish(...windows: DeviceWindow[]) {
  const js = jetstream(nc);
  for (const w of windows) await js.publish(windowsSubject(w.tenant), JSON.stringify([w]));
}

async function until(check: () => boolean, what: string, timeoutMs = 4_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startOwner(write: RollupOwnerOptions['write'], extra: Partial<RollupOwnerOptions> = {}) {
  const owner = await RollupOwner.start({
    nc,
    horizonMs: H,
    flushIntervalMs: 50,
    retryIntervalMs: 50,
    write,
    log,
    ...extra,
  });
  owners.push(owner);
  return owner;
}

/** The window that ended last: its messages are stored now, well within the horizon of its end. */
const recentStart = () => alignDown(Date.now(), WINDOW_MS) - WINDOW_MS;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await Promise.all(owners.map((o) => o.stop()));
  await nc?.close();
  await nats?.dispose();
});

describe('RollupOwner', () => {
  it('waits for the stream, then writes exact fleet rows per tenant and label', async () => {
    const collector = new Collector();
    let skipped = 0;
    const owner = await startOwner(collector.write, { observer: { skipped: (n) => (skipped += n) } });
    await new Promise((r) => setTimeout(r, 150)); // bounded: a few polls for the missing stream
    expect(owner.isCaughtUp).toBe(false);
    await ensureWindowsStream(jsm, { replicas: 1, horizonMs: H });
    const start = recentStart();
    await publish(
      dw('acme', 'd1', start, [1, 2, 3], { type: 'boiler', site: 'paris' }),
      dw('acme', 'd2', start, [10, 20], { type: 'boiler', site: 'lyon' }),
      dw('acme', 'd1', start, [1, 2, 3, 6], { type: 'boiler', site: 'paris' }), // a correction
      dw('acme', 'd3', start - 2 * 3_600 * S, [99], { type: 'boiler' }), // hours-old data replayed
    );
    await until(() => collector.row('acme', start)?.count === 6, 'the corrected rows');
    const common = { tenant: 'acme', metric: 'temperature', window: '10s', startMs: start };
    expect(collector.rowsOf('acme')).toEqual([
      { ...common, group: 'all', groupValue: 'all', devices: 2, count: 6, mean: 42 / 6, min: 1, max: 20 },
      { ...common, group: 'site', groupValue: 'lyon', devices: 1, count: 2, mean: 15, min: 10, max: 20 },
      { ...common, group: 'site', groupValue: 'paris', devices: 1, count: 4, mean: 3, min: 1, max: 6 },
      { ...common, group: 'type', groupValue: 'boiler', devices: 2, count: 6, mean: 7, min: 1, max: 20 },
    ]);
    expect(skipped).toBe(1);
    await owner.stop();
  });

  it('lets a new owner rebuild the same state from the stream, so a later correction counts every device', async () => {
    await ensureWindowsStream(jsm, { replicas: 1, horizonMs: H });
    const start = recentStart();
    await publish(
      dw('globex', 'd1', start, [1, 3], { site: 'oslo' }),
      dw('globex', 'd2', start, [5], { site: 'oslo' }),
      dw('globex', 'd1', start, [1, 3, 5], { site: 'oslo' }),
    );
    const before = new Collector();
    const first = await startOwner(before.write);
    await until(() => before.row('globex', start)?.count === 4, 'the first owner’s rows');
    await first.stop();

    const after = new Collector();
    const second = await startOwner(after.write);
    await until(() => after.rowsOf('globex').length === 2, 'the second owner’s rows');
    expect(after.rowsOf('globex')).toEqual(before.rowsOf('globex'));
    // Nothing partial was written while it replayed: every row it wrote is the complete one.
    expect(after.written.filter((r) => r.tenant === 'globex')).toEqual(before.rowsOf('globex'));

    await publish(dw('globex', 'd2', start, [5, 7], { site: 'oslo' }));
    await until(() => after.row('globex', start)?.count === 5, 'the row after the correction');
    expect(after.row('globex', start)).toMatchObject({ devices: 2, count: 5, mean: 21 / 5, min: 1, max: 7 });
    expect(after.row('globex', start, 'site', 'oslo')).toMatchObject({ devices: 2, count: 5 });
    await second.stop();
  });

  it('writes nothing while it replays: every row it writes counts every device', async () => {
    const start = recentStart();
    const devices = 2_500; // several pulls, with flushes due between them
    const js = jetstream(nc);
    for (let i = 0; i < devices; i += 250) {
      await Promise.all(
        Array.from({ length: 250 }, (_, j) =>
          js.publish(windowsSubject('massive'), JSON.stringify([dw('massive', `d${i + j}`, start, [i + j])])),
        ),
      );
    }
    const collector = new Collector();
    const owner = await startOwner(collector.write, { flushIntervalMs: 1 });
    await until(() => collector.row('massive', start) !== undefined, 'the row');
    await owner.stop();
    const rows = collector.written.filter((r) => r.tenant === 'massive');
    expect(rows.map((r) => r.devices)).toEqual([devices]);
    expect(rows[0]).toMatchObject({ count: devices, mean: (devices - 1) / 2, min: 0, max: devices - 1 });
  });

  it('keeps the rows of a rejected write and delivers them at the next flush', async () => {
    const start = recentStart();
    await publish(dw('initech', 'd1', start, [2]), dw('initech', 'd2', start, [4]));
    const collector = new Collector(1);
    let durable = 0;
    const owner = await startOwner(collector.write, { observer: { rows: (n) => (durable += n) } });
    await until(() => collector.row('initech', start) !== undefined, 'rows after the failed write');
    expect(collector.failures).toBe(1);
    expect(collector.row('initech', start)).toMatchObject({ devices: 2, count: 2, mean: 3, min: 2, max: 4 });
    expect(durable).toBe(collector.written.length);
    await owner.stop();
  });

  it('never writes a window that was already past retention when it caught up', async () => {
    const aligned = alignDown(Date.now(), WINDOW_MS);
    const expired = aligned - 4 * WINDOW_MS; // ends 30–40 s ago: within the horizon when stored
    const live = aligned + 2 * WINDOW_MS; // ends in 20–30 s
    await publish(dw('umbrella', 'd1', expired, [1]), dw('umbrella', 'd1', live, [2]));
    const collector = new Collector();
    // 45 s ahead: the replay still starts before those messages, but `expired` ended over H ago.
    const owner = await startOwner(collector.write, { clock: () => Date.now() + 45 * S });
    await until(() => collector.row('umbrella', live) !== undefined, 'the live window');
    await owner.stop();
    expect(collector.written.filter((r) => r.tenant === 'umbrella').map((r) => r.startMs)).toEqual([live]);
  });

  it('recreates its consumer when JetStream loses it, resuming after the last message', async () => {
    const collector = new Collector();
    const owner = await startOwner(collector.write);
    await until(() => owner.isCaughtUp, 'catching up');
    for await (const ci of await jsm.consumers.list(WINDOWS_STREAM)) {
      await jsm.consumers.delete(WINDOWS_STREAM, ci.name);
    }
    const start = recentStart();
    await publish(dw('hooli', 'd1', start, [3]));
    await until(() => collector.row('hooli', start) !== undefined, 'a row from the recreated consumer');
    expect(collector.row('hooli', start)).toMatchObject({ devices: 1, count: 1, mean: 3 });
    await owner.stop();
  });

  it('says it is stalled while a write waits ROLE_STALL_TIMEOUT, and keeps dropping windows past the horizon meanwhile', async () => {
    await ensureWindowsStream(jsm, { replicas: 1, horizonMs: H });
    let offsetMs = 0;
    let release: (() => void) | undefined;
    const owner = await startOwner(
      () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
      { clock: () => Date.now() + offsetMs, stallTimeoutMs: 30 * S },
    );
    const start = recentStart();
    await publish(dw('stuckco', 'd1', start, [1]), dw('stuckco', 'd1', start - WINDOW_MS, [1]));
    await until(() => release !== undefined, 'a write to wait for the TSDB');
    expect(owner.stalled()).toBeUndefined();
    offsetMs = 31 * S;
    expect(owner.stalled()).toBe('fleet rows not written for 31 s');

    // The write still waits, and time passes every window's horizon: they go all the same.
    expect(owner.fleetWindows).toBeGreaterThan(1);
    offsetMs = 10 * H;
    await publish(dw('stuckco', 'd2', recentStart(), [1]));
    await until(() => owner.fleetWindows === 1, 'the windows past the horizon to go');
    release!();
    await until(() => owner.stalled() === undefined, 'the write to complete');
    await owner.stop();
  });
});
