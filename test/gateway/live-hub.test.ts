import { describe, expect, it } from 'vitest';
import { telemetrySubject } from '../../contract/index.js';
import { LiveFeed, type LiveMessage } from '../../gateway/live/live-feed.js';
import { LiveHub, type LiveSink } from '../../gateway/live/live-hub.js';
import { LiveSummarizer } from '../../gateway/live/live-summary.js';

const T0 = Date.parse('2026-11-28T12:00:00.000Z');

/** A client socket whose unsent bytes the test sets. */
class FakeSink implements LiveSink {
  writableLength = 0;
  frames: (LiveMessage & { status: Record<string, unknown> })[] = [];
  ended = false;
  destroyed = false;
  write(chunk: string) {
    expect(chunk).toMatch(/^data: .*\n\n$/s);
    this.frames.push(JSON.parse(chunk.slice('data: '.length)));
    return true;
  }
  end() {
    this.ended = true;
  }
  destroy() {
    this.destroyed = true;
  }
}

function setup(maxClients = 4) {
  const time = { now: T0 };
  const feed = new LiveFeed({ clock: () => time.now });
  const hub = new LiveHub({
    feed,
    maxClients,
    maxBufferedBytes: 1_000,
    stallTimeoutMs: 10_000,
    status: () => ({ gateway: 'gw-1', nats: true }),
    clock: () => time.now,
  });
  const gateway = new LiveSummarizer({ gatewayId: 'gw-1', clock: () => time.now });
  const encoder = new TextEncoder();
  // One event stored by the gateway, and its summary arriving at the feed.
  const publish = (deviceId: string) => {
    gateway.onStored(telemetrySubject('acme', deviceId), encoder.encode('{}'));
    feed.onSummary(encoder.encode(JSON.stringify(gateway.take())));
  };
  return { time, feed, hub, publish };
}

describe('LiveHub', () => {
  it('sends a new client everything, then only what changed, with the gateway status', () => {
    const { time, hub, publish } = setup();
    publish('d1');
    const sink = new FakeSink();
    expect(hub.add(sink)).toBe(true);
    expect(sink.frames).toHaveLength(1);
    expect(sink.frames[0]).toMatchObject({ full: true, status: { gateway: 'gw-1', nats: true } });

    hub.push(); // nothing new
    expect(sink.frames).toHaveLength(1);
    publish('d2');
    time.now += 1_000;
    hub.push();
    expect(sink.frames).toHaveLength(2);
    expect(sink.frames[1]!.full).toBe(false);
    expect(sink.frames[1]!.readings!.map((r) => r.deviceId)).toEqual(['d2']);
    expect(sink.frames[1]!.series!.events).toEqual([2]);
  });

  it('skips a client with unsent bytes and later sends it one delta covering what it missed', () => {
    const { time, hub, publish } = setup();
    const fast = new FakeSink();
    const slow = new FakeSink();
    hub.add(fast);
    hub.add(slow);
    slow.writableLength = 5_000;
    for (let i = 0; i < 5; i++) {
      publish(`d${i}`);
      time.now += 1_000;
      hub.push();
    }
    expect(fast.frames).toHaveLength(6);
    expect(slow.frames).toHaveLength(1);

    slow.writableLength = 0;
    hub.push();
    expect(slow.frames).toHaveLength(2);
    const caughtUp = slow.frames[1]!;
    expect(caughtUp.full).toBe(false);
    expect(caughtUp.readings!.map((r) => r.deviceId)).toEqual(['d0', 'd1', 'd2', 'd3', 'd4']);
    expect(caughtUp.series!.events).toEqual([1, 1, 1, 1, 1]);
    expect(slow.destroyed).toBe(false);
  });

  it('disconnects a client stalled for stallTimeoutMs', () => {
    const { time, hub, publish } = setup();
    const stuck = new FakeSink();
    hub.add(stuck);
    stuck.writableLength = 5_000;
    for (let s = 0; s <= 10; s++) {
      publish('d1');
      hub.push();
      time.now += 1_000;
    }
    expect(stuck.destroyed).toBe(true);
    expect(hub.size).toBe(0);
  });

  it('refuses clients past maxClients, and ends every stream on close', () => {
    const { hub } = setup(2);
    const sinks = [new FakeSink(), new FakeSink(), new FakeSink()];
    expect(sinks.map((s) => hub.add(s))).toEqual([true, true, false]);
    hub.remove(sinks[0]!);
    expect(hub.add(sinks[2]!)).toBe(true);
    hub.close();
    expect(sinks.map((s) => s.ended)).toEqual([false, true, true]);
    expect(hub.size).toBe(0);
  });
});
