import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import {
  type AlertTransition,
  type CanonicalEvent,
  PROCESSOR_CHECKPOINTS_BUCKET,
  TELEMETRY_STREAM,
} from '../../contract/index.js';
import { parseAlertRules } from '../../processors/alerts/alert-rules.js';
import type { SavedCheckpoint } from '../../processors/consume/checkpoint-fit.js';
import {
  checkpointKey,
  consumerName,
  PartitionConsumer,
  type PartitionConsumerOptions,
  type PartitionEffects,
} from '../../processors/consume/partition-consumer.js';
import type { ProcessorLimit } from '../../processors/metrics.js';
import type { PartitionBatch } from '../../processors/partition-pipeline.js';
import type { WindowResult, WindowSettings } from '../../processors/windows/device-windows.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const S = 1_000;
const windows: WindowSettings = {
  sizesMs: [10 * S, 60 * S],
  allowedLatenessMs: 5 * S,
  idleTimeoutMs: 30 * S,
};
const T0 = Date.parse('2026-11-28T00:00:00.000Z');
const log = createLogger('test', 'silent');

let nats: NatsServer;
let nc: NatsConnection;

/**
 * Records what the consumer hands to its sink, keeping the last write per series and time as
 * InfluxDB does. `hold()` makes writes wait, as while a TSDB is down.
 */
class RecordingEffects implements PartitionEffects {
  /** Raw lines, one per event. */
  readonly raw: string[] = [];
  readonly windows = new Map<string, WindowResult>();
  readonly alerts: AlertTransition[] = [];
  private held: (() => void)[] | undefined;
  private accepting: (() => void)[] = [];
  overloaded = false;
  whenAccepting(): Promise<void> {
    return this.overloaded ? new Promise((resolve) => this.accepting.push(resolve)) : Promise.resolve();
  }
  write(batch: PartitionBatch): Promise<void> {
    const apply = () => {
      this.raw.push(...batch.raw);
      this.alerts.push(...batch.alerts);
      for (const r of batch.windows)
        this.windows.set(`${r.deviceId}|${r.metric}|${r.windowMs}|${r.startMs}`, r);
    };
    if (!this.held) {
      apply();
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.held!.push(() => {
        apply();
        resolve();
      }),
    );
  }
  hold() {
    this.held = [];
    this.overloaded = true;
  }
  release() {
    const held = this.held ?? [];
    this.held = undefined;
    this.overloaded = false;
    for (const done of held) done();
    for (const resume of this.accepting.splice(0)) resume();
  }
  /** Writes waiting for release(). */
  get heldWrites(): number {
    return this.held?.length ?? 0;
  }
  minuteOf(device: string) {
    return this.windows.get(`${device}|temperature|${60 * S}|${T0}`)?.values;
  }
}

function event(device: string, i: number, tsMs: number, value: number): CanonicalEvent {
  return {
    id: `acme.${device}.${i}.${tsMs}`,
    tenant: 'acme',
    deviceId: device,
    ts: new Date(tsMs).toISOString(),
    receivedAt: new Date(tsMs).toISOString(),
    seq: i,
    schemaVersion: 1,
    metrics: { temperature: { value, unit: 'degC' } },
    labels: {},
  };
}

async function publish(partition: number, events: CanonicalEvent[]) {
  const js = jetstream(nc);
  for (const e of events) await js.publish(`telemetry.${partition}.acme.${e.deviceId}`, JSON.stringify(e));
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function start(
  partition: number,
  effects: PartitionEffects,
  clock: () => number,
  onFailure?: (partition: number) => void,
  over: Partial<PartitionConsumerOptions> = {},
) {
  return PartitionConsumer.start({
    partition,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    checkpoints: await new Kvm(nc).create(PROCESSOR_CHECKPOINTS_BUCKET, { history: 1 }),
    effects,
    windows,
    checkpointIntervalMs: 0,
    log,
    clock,
    onFailure,
    ...over,
  });
}

async function savedCheckpoint(
  partition: number,
): Promise<{ bytes: number; checkpoint: SavedCheckpoint } | undefined> {
  const kv = await new Kvm(nc).open(PROCESSOR_CHECKPOINTS_BUCKET);
  const entry = await kv.get(checkpointKey(partition));
  return entry?.operation === 'PUT' ? { bytes: entry.value.length, checkpoint: entry.json() } : undefined;
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  await (await jetstreamManager(nc)).streams.add({ name: TELEMETRY_STREAM, subjects: ['telemetry.>'] });
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

describe('PartitionConsumer', () => {
  it('writes raw events and exact windows, then checkpoints and acknowledges only what is durable', async () => {
    const effects = new RecordingEffects();
    const wall = T0 + 70 * S; // readings arrive in real time: the wall clock is at the last one
    // One reading per second for 70 s from two devices: the first minute closes for both.
    const events = Array.from({ length: 70 }, (_, i) => [
      event('d1', i, T0 + i * S, i),
      event('d2', i, T0 + i * S, 100 + i),
    ]).flat();
    await publish(1, events);
    await publish(2, [event('other', 0, T0, 1)]); // another partition: not ours
    const consumer = await start(1, effects, () => wall);
    await until(() => effects.raw.length === 140, 'raw events');
    expect(effects.minuteOf('d1')).toMatchObject({
      count: 60,
      sum: 1770,
      min: 0,
      max: 59,
      mean: 29.5,
      last: 59,
    });
    expect(effects.minuteOf('d2')).toMatchObject({ count: 60, sum: 7770, min: 100, max: 159 });
    await consumer.stop();
    // The second minute is still open: acknowledged up to just before its first reading.
    const firstOfSecondMinute = 2 * 60 + 1;
    expect(consumer.ackSeq).toBe(firstOfSecondMinute - 1);
    const info = await (await jetstreamManager(nc)).consumers.info(TELEMETRY_STREAM, consumerName(1));
    expect(info.ack_floor.stream_seq).toBeLessThanOrEqual(consumer.ackSeq);
    expect(info.ack_floor.stream_seq).toBeGreaterThan(0);
  });

  it('resumes after the checkpoint on restart and completes open windows without counting twice', async () => {
    const effects = new RecordingEffects();
    let wall = T0 + 200 * S;
    const again = await start(1, effects, () => wall);
    // Replay starts after the checkpoint: only the open second minute comes back.
    await until(() => effects.raw.length === 20, 'replayed events of the open window');
    wall += 200 * S; // both devices idle long enough: every window final
    again.flushWindows();
    await until(() => effects.windows.has(`d1|temperature|${60 * S}|${T0 + 60 * S}`), 'second minute');
    expect(effects.windows.get(`d1|temperature|${60 * S}|${T0 + 60 * S}`)!.values).toMatchObject({
      count: 10,
      sum: 645,
    });
    expect(effects.minuteOf('d1')).toBeUndefined(); // final before the checkpoint: not emitted again
    await again.stop();
  });

  it('stops pulling while the sink is overloaded and loses nothing when it recovers', async () => {
    const effects = new RecordingEffects();
    effects.hold();
    const events = Array.from({ length: 5_000 }, (_, i) => event(`dev${i % 10}`, i, T0 + 1_000 * S + i, i));
    await publish(3, events);
    const hits: ProcessorLimit[] = [];
    const consumer = await start(3, effects, () => T0 + 1_000 * S, undefined, {
      onLimit: (limit) => hits.push(limit),
    });
    await new Promise((r) => setTimeout(r, 300)); // bounded: lets it pull what it would
    expect(hits).toContain('TSDB_MAX_PENDING_LINES');
    const info = await (await jetstreamManager(nc)).consumers.info(TELEMETRY_STREAM, consumerName(3));
    expect(info.num_pending).toBeGreaterThan(2_000); // most of the partition is still on the server
    effects.release();
    await until(() => effects.raw.length === 5_000, 'all events after recovery');
    // Each event has its own time: 5,000 distinct lines.
    expect(new Set(effects.raw).size).toBe(5_000);
    await consumer.stop();
  });

  it('does not take its devices as idle while it stops pulling for an overloaded sink', async () => {
    // A fault drill found this: with the TSDB down, the sink filled up and the partition stopped
    // pulling for longer than the idle timeout; its devices' windows then closed on wall time and
    // the backlog, pulled once the TSDB was back, was late and left out of the aggregates.
    const effects = new RecordingEffects();
    effects.hold();
    const start0 = T0 + 6_000 * S; // a minute boundary
    const readings = 3_000; // 10 ms apart: 30 s of event time inside one minute
    await publish(
      8,
      Array.from({ length: readings }, (_, i) => event('busy', i, start0 + i * 10, 1)),
    );
    let wall = start0;
    const consumer = await start(8, effects, () => wall);
    await until(() => effects.heldWrites > 0, 'a first batch handed to the full sink');
    wall += 2 * windows.idleTimeoutMs; // the sink stays full for a long while
    consumer.flushWindows();
    effects.release();
    await until(() => effects.raw.length === readings, 'the backlog after recovery');
    wall += 2 * windows.idleTimeoutMs; // now the device really is quiet: its windows close
    consumer.flushWindows();
    await until(
      () => effects.windows.get(`busy|temperature|${60 * S}|${start0}`)?.final === true,
      'the minute to be final',
    );
    expect(effects.windows.get(`busy|temperature|${60 * S}|${start0}`)!.values.count).toBe(readings);
    await consumer.stop();
  });

  it('does not take its devices as idle while readings wait in its backlog, however slow it runs', async () => {
    // The simulator's exactness test found this under load: a processor starved of CPU for longer
    // than the idle timeout took its devices as quiet and closed their windows, and the readings
    // still waiting in the stream came late. Here wall time moves past the idle timeout at every
    // look, as if the process were starved between any two steps; only a caught-up partition may
    // count it.
    const effects = new RecordingEffects();
    const start0 = T0 + 7_200 * S; // a minute boundary
    const readings = 1_500; // 20 ms apart: 30 s of event time inside one minute
    await publish(
      9,
      Array.from({ length: readings }, (_, i) => event('starved', i, start0 + i * 20, 1)),
    );
    let wall = start0;
    const late: number[] = [];
    const consumer = await start(9, effects, () => (wall += 2 * windows.idleTimeoutMs), undefined, {
      observer: { late: (n) => late.push(n) },
    });
    try {
      await until(() => effects.raw.length === readings, 'the backlog');
      // Caught up, the clock runs again: the device is quiet now, and its minute closes.
      await until(() => {
        consumer.flushWindows();
        return effects.windows.get(`starved|temperature|${60 * S}|${start0}`)?.final === true;
      }, 'the minute to be final once caught up and quiet');
      expect(late).toEqual([]);
      expect(effects.windows.get(`starved|temperature|${60 * S}|${start0}`)!.values.count).toBe(readings);
    } finally {
      await consumer.stop();
    }
  });

  it('hands over the tail of a burst at once, without waiting for another message', async () => {
    const effects = new RecordingEffects();
    // Not a multiple of the pull size: the last pull is partly filled and nothing follows it.
    const events = Array.from({ length: 2_345 }, (_, i) => event(`dev${i % 7}`, i, T0 + 2_000 * S + i, i));
    await publish(5, events);
    const consumer = await start(5, effects, () => T0 + 2_000 * S);
    await until(() => effects.raw.length === 2_345, 'the whole burst, tail included', 5_000);
    await consumer.stop();
  });

  it('checkpoints nothing past a batch the sink could not write, so it replays', async () => {
    let offered = 0;
    const refusing: PartitionEffects = {
      overloaded: false,
      whenAccepting: () => Promise.resolve(),
      write: (batch) => {
        offered += batch.events;
        return Promise.reject(new Error('sink closed'));
      },
    };
    const events = Array.from({ length: 30 }, (_, i) => event('dev1', i, T0 + 3_000 * S + i * S, i));
    await publish(6, events);
    const first = await start(6, refusing, () => T0 + 3_000 * S);
    await until(() => offered === 30, 'every event offered to the refusing sink');
    await first.stop();
    expect(first.ackSeq).toBe(0);
    const effects = new RecordingEffects();
    const second = await start(6, effects, () => T0 + 3_000 * S);
    await until(() => effects.raw.length === 30, 'every event again');
    await second.stop();
  });

  it('saves the alerts firing for its devices with the checkpoint, and hands them to the next owner', async () => {
    const rules = parseAlertRules(
      'rules:\n  - { name: hot, type: threshold, severity: critical, metric: temperature, op: ">", value: 80, clear: 75 }',
      'yaml',
    );
    const at = T0 + 4_000 * S;
    await publish(7, [event('dev1', 0, at, 90)]);
    const effects = new RecordingEffects();
    const first = await start(7, effects, () => at, undefined, { rules });
    await until(() => effects.raw.length === 1, 'the event');
    expect(effects.alerts.map((t) => [t.rule, t.state, t.atMs])).toEqual([['hot', 'firing', at]]);
    await first.stop();
    // Saved without its message (the next transition has its own): half the bytes per alert.
    const { message: _, ...saved } = effects.alerts[0]!;
    expect((await savedCheckpoint(7))?.checkpoint.firing).toEqual([saved]);

    // The next owner neither fires it again at a still-hot reading nor forgets to resolve it.
    await publish(7, [event('dev1', 1, at + S, 95), event('dev1', 2, at + 2 * S, 20)]);
    const next = new RecordingEffects();
    const second = await start(7, next, () => at + 2 * S, undefined, { rules });
    // Its windows were open: the first reading is replayed too, and judged already.
    await until(() => next.raw.length === 3, 'the replayed and the later events');
    expect(next.alerts.map((t) => [t.rule, t.state, t.atMs])).toEqual([['hot', 'resolved', at + 2 * S]]);
    await second.stop();
  });

  it('fires no absence while it stops pulling for a full sink, and does once the device is really silent', async () => {
    const rules = parseAlertRules(
      'rules:\n  - { name: silent, type: absence, severity: warning, metric: temperature, after: 30s }',
      'yaml',
    );
    const effects = new RecordingEffects();
    const at = T0 + 7_000 * S;
    // A device reporting every second; the sink is full before its first reading is written.
    await publish(
      9,
      Array.from({ length: 5 }, (_, i) => event('steady', i, at + i * S, 20)),
    );
    effects.hold();
    let wall = at + 4 * S;
    const consumer = await start(9, effects, () => wall, undefined, { rules });
    await until(() => effects.heldWrites > 0, 'a first batch handed to the full sink');
    // The TSDB stays down for 10 minutes; the processor's timer flushes throughout.
    for (let minute = 1; minute <= 10; minute++) {
      wall += 60 * S;
      consumer.flushWindows();
    }
    // Meanwhile the device went on reporting: its readings wait in the stream, unread.
    await publish(
      9,
      Array.from({ length: 600 }, (_, i) => event('steady', 5 + i, at + (5 + i) * S, 20)),
    );
    effects.release();
    await until(() => effects.raw.length === 605, 'the backlog once the TSDB is back');
    consumer.flushWindows();
    expect(effects.alerts).toEqual([]);

    // Now it really is silent: 30 s after its last reading (handled now) the absence fires.
    wall += 29 * S;
    consumer.flushWindows();
    expect(effects.alerts).toEqual([]);
    wall += 2 * S;
    consumer.flushWindows();
    await until(() => effects.alerts.length > 0, 'the absence alert');
    expect(effects.alerts.map((t) => [t.rule, t.state, t.atMs])).toEqual([
      ['silent', 'firing', at + 604 * S + 30 * S],
    ]);
    await consumer.stop();
  });

  it('reports a failure when its JetStream consumer disappears, so it can be restarted from the checkpoint', async () => {
    const failures: number[] = [];
    const consumer = await start(
      4,
      new RecordingEffects(),
      () => T0,
      (p) => failures.push(p),
    );
    await (await jetstreamManager(nc)).consumers.delete(TELEMETRY_STREAM, consumerName(4));
    await until(() => failures.length > 0, 'the failure to be reported');
    expect(failures).toEqual([4]);
    await consumer.stop();
  });

  /** Device ids as long as the contract allows (64), 150 of them: ~12 KB of watermarks. */
  const longId = (i: number) => `dev-${String(i).padStart(60, '0')}`;

  it('keeps its checkpoint under CHECKPOINT_MAX_BYTES however many devices it has seen', async () => {
    const hits: ProcessorLimit[] = [];
    const effects = new RecordingEffects();
    const at = T0 + 5_000 * S;
    const events = Array.from({ length: 150 }, (_, i) => event(longId(i), 0, at + i, i));
    events.push({
      ...event('chatty', 0, at, 1),
      metrics: { a: { value: 1, unit: '' }, b: { value: 2, unit: '' } },
    });
    await publish(9, events);
    let wall = at;
    const consumer = await start(9, effects, () => wall, undefined, {
      checkpointMaxBytes: 4_096,
      windows: { ...windows, maxMetrics: 1 },
      onLimit: (limit) => hits.push(limit),
    });
    await until(() => effects.raw.length === 151, 'every event');
    wall += 500 * S; // every device idle: every window final, nothing left for a replay
    consumer.flushWindows();
    await until(() => consumer.ackSeq > 0, 'a checkpoint');
    await consumer.stop();
    const saved = (await savedCheckpoint(9))!;
    expect(saved.bytes).toBeLessThanOrEqual(4_096);
    // What did not fit is in the floor: no device of this partition may reopen a window it closed.
    expect(saved.checkpoint.floor).toBeGreaterThanOrEqual(at);
    expect(hits).toContain('CHECKPOINT_MAX_BYTES');
    expect(hits).toContain('WINDOW_MAX_METRICS'); // `chatty` sent two metrics, the windows keep one
    expect(effects.windows.has(`chatty|b|${60 * S}|${at - (at % (60 * S))}`)).toBe(false);
  });

  it('neither checkpoints nor acknowledges, and says so, while the replay range holds more devices than fit', async () => {
    const hits: ProcessorLimit[] = [];
    const effects = new RecordingEffects();
    const at = T0 + 7_000 * S;
    const before = (await (await jetstreamManager(nc)).streams.info(TELEMETRY_STREAM)).state.last_seq;
    await publish(
      10,
      Array.from({ length: 150 }, (_, i) => event(longId(i), 0, at + i, i)),
    );
    let wall = at + 200;
    const consumer = await start(10, effects, () => wall, undefined, {
      checkpointMaxBytes: 4_096,
      onLimit: (limit) => hits.push(limit),
    });
    await until(() => effects.raw.length === 150, 'every event');
    consumer.flushWindows(true);
    await until(() => consumer.checkpointBlocked !== undefined, 'the checkpoint to be refused');
    expect(consumer.checkpointBlocked).toBe('partition 10: checkpoint over CHECKPOINT_MAX_BYTES');
    expect(consumer.ackSeq).toBeLessThanOrEqual(before); // none of these events acknowledged
    expect(hits).toContain('CHECKPOINT_MAX_BYTES');
    wall += 500 * S; // the windows close: nothing needs replaying any more
    consumer.flushWindows(true);
    await until(() => consumer.ackSeq > before, 'the checkpoint once it fits');
    expect(consumer.checkpointBlocked).toBeUndefined();
    await consumer.stop();
  });
});
