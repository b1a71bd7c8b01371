import { describe, expect, it } from 'vitest';
import {
  type CanonicalEvent,
  type DeadLetter,
  deadletterSubject,
  type PresenceState,
  presenceStateKey,
  telemetrySubject,
} from '../../contract/index.js';
import { LiveFeed, type LiveFeedLimits, OTHER } from '../../gateway/live/live-feed.js';
import { LiveSummarizer, type LiveSummaryLimits } from '../../gateway/live/live-summary.js';

const T0 = Date.parse('2026-11-28T12:00:00.000Z');
const bytes = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

function event(tenant: string, deviceId: string, temperature: number, type = 'thermometer'): Uint8Array {
  const e: CanonicalEvent = {
    id: `${tenant}.${deviceId}.${temperature}`,
    tenant,
    deviceId,
    ts: new Date(T0).toISOString(),
    receivedAt: new Date(T0).toISOString(),
    schemaVersion: 1,
    labels: { type },
    metrics: { temperature: { value: temperature, unit: 'degC' }, humidity: { value: 40, unit: '%' } },
  };
  return bytes(e);
}

function deadLetter(tenant: string, deviceId: string, reason: string, detail: string): Uint8Array {
  const d: DeadLetter = {
    reason,
    detail,
    tenant,
    deviceId,
    clientId: deviceId,
    topic: `devices/${deviceId}/telemetry`,
    receivedAt: new Date(T0).toISOString(),
    payload: 'nope',
    payloadEncoding: 'utf8',
    payloadBytes: 4,
    truncated: false,
  };
  return bytes(d);
}

function presence(tenant: string, deviceId: string, online: boolean): Uint8Array {
  const s: PresenceState = {
    tenant,
    deviceId,
    online,
    reason: online ? 'connected' : 'disconnected',
    since: new Date(T0).toISOString(),
    connections: [],
  };
  return bytes(s);
}

const alert = (deviceId: string, rule: string, state: 'firing' | 'resolved') =>
  bytes({
    tenant: 'acme',
    deviceId,
    rule,
    severity: 'critical',
    state,
    value: 90,
    atMs: T0,
    message: `${rule} on ${deviceId}`,
  });

/**
 * A feed and a gateway's summarizer on one clock: the gateway stores, `flush()` is its once-a-second
 * summary arriving at the feed (as live-source.ts hands it over, bytes).
 */
function setup(limits: Partial<LiveFeedLimits> = {}, summaryLimits: Partial<LiveSummaryLimits> = {}) {
  const time = { now: T0 };
  const feed = new LiveFeed({ clock: () => time.now, limits });
  const gateway = new LiveSummarizer({ gatewayId: 'gw-1', clock: () => time.now, limits: summaryLimits });
  const telemetry = (tenant: string, deviceId: string, temperature = 20) =>
    gateway.onStored(telemetrySubject(tenant, deviceId), event(tenant, deviceId, temperature));
  const deadletter = (tenant: string, deviceId: string, reason: string, detail: string) =>
    gateway.onStored(deadletterSubject(tenant, reason), deadLetter(tenant, deviceId, reason, detail));
  const flush = (from: LiveSummarizer = gateway) => feed.onSummary(bytes(from.take()));
  return { time, feed, gateway, telemetry, deadletter, flush };
}

describe('LiveFeed', () => {
  it('counts messages per whole second and keeps historySeconds of them', () => {
    const { time, feed, telemetry, deadletter, flush } = setup({ historySeconds: 10 });
    for (let i = 0; i < 3; i++) telemetry('acme', 'd1');
    flush();
    time.now += 1_000;
    for (let i = 0; i < 5; i++) telemetry('acme', 'd2');
    deadletter('acme', 'd2', 'PAYLOAD_NOT_JSON', 'x');
    flush();
    time.now += 1_000;

    const { message } = feed.delta()!;
    const end = T0 / 1000 + 1;
    expect(message.full).toBe(true);
    expect(message.series!.end).toBe(end);
    expect(message.series!.events.slice(-2)).toEqual([3, 5]);
    expect(message.series!.deadletters.slice(-2)).toEqual([0, 1]);
    // History starts when the feed did: earlier seconds are unknown, not zero.
    expect(message.series!.events).toHaveLength(2);
    expect(message.totals).toMatchObject({ events: 8, deadletters: 1 });

    // 20 s later the ring has wrapped twice: old counts are gone, not added to.
    time.now += 20_000;
    const later = feed.delta()!.message.series!;
    expect(later.events).toEqual(Array(10).fill(0));
  });

  it('sends a client only the seconds and rows it has not had', () => {
    const { time, feed, telemetry, flush } = setup();
    telemetry('acme', 'd1', 20);
    telemetry('acme', 'd2', 21);
    flush();
    time.now += 1_000;
    const first = feed.delta()!;
    expect(first.message.readings!.map((r) => r.deviceId)).toEqual(['d1', 'd2']);

    // Nothing new within the same second: nothing to send.
    time.now += 100;
    expect(feed.delta(first.cursor)).toBeUndefined();

    telemetry('acme', 'd1', 25);
    flush();
    const second = feed.delta(first.cursor)!;
    expect(second.message.full).toBe(false);
    expect(second.message.series).toBeUndefined();
    expect(second.message.readings).toEqual([
      expect.objectContaining({
        key: 'acme.d1',
        type: 'thermometer',
        metrics: [
          ['temperature', 25, 'degC'],
          ['humidity', 40, '%'],
        ],
        more: 0,
      }),
    ]);

    time.now += 1_000;
    const third = feed.delta(second.cursor)!;
    expect(third.message.readings).toBeUndefined();
    expect(third.message.series).toMatchObject({ end: T0 / 1000 + 1, events: [1] });
  });

  it('keeps the latest reading of at most `readings` devices and names the evicted ones', () => {
    const { feed, telemetry, flush } = setup({ readings: 3 });
    for (const d of ['d1', 'd2', 'd3']) telemetry('acme', d);
    flush();
    const start = feed.delta()!;
    telemetry('acme', 'd1'); // d1 is now the most recent: d2 goes first
    telemetry('acme', 'd4');
    flush();
    const delta = feed.delta(start.cursor)!;
    expect(delta.message.readings!.map((r) => r.deviceId)).toEqual(['d1', 'd4']);
    expect(delta.message.removed).toEqual(['acme.d2']);
    expect(delta.message.devices.readings).toBe(3);

    // A client so far behind that evictions it missed are no longer listed gets everything again.
    for (const d of ['d5', 'd6', 'd7', 'd8', 'd9']) telemetry('acme', d);
    flush();
    const resent = feed.delta(start.cursor)!;
    expect(resent.message.full).toBe(true);
    expect(resent.message.readings!.map((r) => r.deviceId)).toEqual(['d7', 'd8', 'd9']);
  });

  it('limits the metrics shown per reading', () => {
    const { feed, telemetry, flush } = setup({}, { metricsPerReading: 1 });
    telemetry('acme', 'd1', 20);
    flush();
    const a = feed.delta()!.message.readings![0]!;
    expect(a.metrics).toEqual([['temperature', 20, 'degC']]);
    expect(a.more).toBe(1);
  });

  it('ignores subjects that are not the contract’s, and summaries that are not summaries', () => {
    const { feed, gateway, flush } = setup();
    gateway.onStored('telemetry.acme.d1', event('acme', 'd1', 20));
    gateway.onStored('deadletter.acme', deadLetter('acme', 'd1', 'X', 'x'));
    flush();
    feed.onSummary(bytes({ gateway: 'gw-2', events: 5 }));
    feed.onSummary(new TextEncoder().encode('not json'));
    expect(feed.delta()!.message.totals.events).toBe(0);
    expect(feed.delta()!.message.totals.deadletters).toBe(0);
  });

  it('carries the latest reading of at most `readings` devices per summary, the most recent', () => {
    const { feed, gateway, telemetry, flush } = setup({}, { readings: 2 });
    for (const d of ['d1', 'd2', 'd3']) telemetry('acme', d);
    telemetry('acme', 'd1', 30);
    const summary = gateway.take();
    expect(summary.readings.map((r) => `${r.deviceId}=${r.metrics[0]![1]}`)).toEqual(['d3=20', 'd1=30']);
    // d1 then d2 made room for a more recent device (d1 came back).
    expect(summary).toMatchObject({ events: 4, readingsLeftOut: 2, reporting: 3 });
    // The next interval starts empty.
    expect(gateway.take()).toMatchObject({ events: 0, readings: [], tenants: [], reasons: [] });
    feed.onSummary(bytes(summary));
    flush();
    expect(feed.delta()!.message.totals.events).toBe(4);
  });

  it('merges the summaries of several gateways, and stops counting the devices of one gone quiet', () => {
    const { time, feed, telemetry, flush } = setup({ gatewayStaleMs: 3_000 });
    const other = new LiveSummarizer({ gatewayId: 'gw-2', clock: () => time.now });
    telemetry('acme', 'd1');
    other.onStored(telemetrySubject('beta', 'd9'), event('beta', 'd9', 30));
    other.onStored(telemetrySubject('beta', 'd8'), event('beta', 'd8', 31));
    flush();
    flush(other);
    feed.tick();
    let { message } = feed.delta()!;
    expect(message.totals.events).toBe(3);
    expect(message.devices.reporting).toBe(3);
    expect(message.readings!.map((r) => r.key)).toEqual(['acme.d1', 'beta.d9', 'beta.d8']);
    expect(message.tenants!.map((t) => [t.tenant, t.events])).toEqual([
      ['beta', 2],
      ['acme', 1],
    ]);
    // gw-2 stops; gw-1 goes on summarising.
    for (let s = 0; s < 4; s++) {
      time.now += 1_000;
      flush();
      feed.tick();
    }
    ({ message } = feed.delta()!);
    expect(message.devices.reporting).toBe(1);
    // Its rows stay: the latest reading of a device is the latest, whoever stored it.
    expect(message.devices.readings).toBe(3);
  });

  it('counts dead letters by reason with the last one’s device and detail, bounded', () => {
    const { feed, deadletter, flush } = setup({ reasons: 2 });
    const dl = (reason: string, device: string, detail: string) => deadletter('acme', device, reason, detail);
    dl('SCHEMA_INVALID', 'd1', 'first');
    dl('SCHEMA_INVALID', 'd2', 'second');
    flush();
    dl('PAYLOAD_NOT_JSON', 'd3', 'x'.repeat(500));
    dl('UNIT_UNKNOWN', 'd4', 'furlongs');
    flush();
    const { message, cursor } = feed.delta()!;
    expect(message.deadletters).toEqual([
      {
        reason: 'SCHEMA_INVALID',
        count: 2,
        last: { tenant: 'acme', deviceId: 'd2', detail: 'second', receivedAt: new Date(T0).toISOString() },
      },
      expect.objectContaining({ reason: 'PAYLOAD_NOT_JSON', count: 1 }),
      expect.objectContaining({ reason: OTHER, count: 1, last: expect.objectContaining({ deviceId: 'd4' }) }),
    ]);
    expect(message.deadletters![1]!.last!.detail).toHaveLength(200);
    expect(message.tenants).toEqual([{ tenant: 'acme', events: 0, deadletters: 4, online: 0, alerts: 0 }]);
    // Unchanged reasons are not sent again.
    expect(feed.delta(cursor)).toBeUndefined();
  });

  it('keeps firing alerts until they resolve', () => {
    const { feed } = setup({ alerts: 2 });
    feed.onAlert(alert('d1', 'too-hot', 'firing'));
    feed.onAlert(alert('d2', 'too-hot', 'firing'));
    feed.onAlert(alert('d2', 'silent', 'firing'));
    feed.onAlert(alert('d2', 'too-hot', 'resolved'));
    feed.onAlert(bytes({ not: 'an alert' }));
    const { message } = feed.delta()!;
    // d1's alert was the oldest past the limit of 2; d2/too-hot resolved.
    expect(message.alerts!.firing).toBe(1);
    expect(message.alerts!.list.map((a) => `${a.deviceId}/${a.rule}`)).toEqual(['d2/silent']);
    expect(message.totals).toMatchObject({ alertsFired: 3, alertsResolved: 1 });
    expect(message.tenants).toEqual([{ tenant: 'acme', events: 0, deadletters: 0, online: 0, alerts: 1 }]);
  });

  it('counts devices online from presence states, and says when there are none to read', () => {
    const { feed } = setup();
    expect(feed.delta()!.message.devices.online).toBeNull();
    feed.setPresenceAvailable(true);
    feed.onPresence(presenceStateKey('acme', 'd1'), presence('acme', 'd1', true));
    feed.onPresence(presenceStateKey('acme', 'd2'), presence('acme', 'd2', true));
    feed.onPresence(presenceStateKey('beta', 'd3'), presence('beta', 'd3', true));
    feed.onPresence(presenceStateKey('acme', 'd2'), presence('acme', 'd2', false));
    feed.onPresence(presenceStateKey('beta', 'd3'), undefined);
    feed.onPresence(presenceStateKey('acme', 'd1'), presence('acme', 'd1', true));
    const { message } = feed.delta()!;
    expect(message.devices.online).toBe(1);
    expect(message.tenants).toEqual([{ tenant: 'acme', events: 0, deadletters: 0, online: 1, alerts: 0 }]);
    // The bucket went away (or the watch restarts): nothing known until it replays.
    feed.setPresenceAvailable(false);
    expect(feed.delta()!.message.devices.online).toBeNull();
  });

  it('counts a device as reporting for reportingWindowMs after its last reading, and samples it per second', () => {
    const { time, feed, telemetry, flush } = setup(
      { gatewayStaleMs: 10_000 },
      { reportingWindowMs: 10_000, reportingTracked: 3 },
    );
    telemetry('acme', 'd1');
    telemetry('acme', 'd2');
    flush();
    feed.tick();
    time.now += 5_000;
    telemetry('acme', 'd1');
    flush();
    feed.tick();
    expect(feed.delta()!.message.devices.reporting).toBe(2);
    time.now += 6_000;
    flush();
    feed.tick();
    let devices = feed.delta()!.message.devices;
    expect(devices).toMatchObject({ reporting: 1, reportingCapped: false });

    for (const d of ['d3', 'd4', 'd5', 'd6']) telemetry('acme', d);
    flush();
    feed.tick();
    devices = feed.delta()!.message.devices;
    expect(devices).toMatchObject({ reporting: 3, reportingCapped: true });

    time.now += 1_000;
    const series = feed.delta()!.message.series!;
    // Seconds with a tick have a sample; the others are gaps, not zeros.
    expect(series.reporting.slice(-12)).toEqual([
      2,
      null,
      null,
      null,
      null,
      2,
      null,
      null,
      null,
      null,
      null,
      3,
    ]);
    expect(series.online.slice(-1)).toEqual([null]);
  });

  it('lists tenants busiest first', () => {
    const { feed, telemetry, flush } = setup({ tenants: 2 });
    telemetry('a', 'd1');
    telemetry('b', 'd1');
    telemetry('b', 'd2');
    telemetry('c', 'd1');
    flush();
    expect(feed.delta()!.message.tenants!.map((t) => [t.tenant, t.events])).toEqual([
      ['b', 2],
      ['(other)', 1],
      ['a', 1],
    ]);
  });
});
