import { DiscardPolicy, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { NotStoredError } from '../../gateway/errors.js';
import { JetStreamPublisher } from '../../gateway/jetstream-publisher.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

let nats: NatsServer;
let nc: NatsConnection;
const log = createLogger('test', 'silent');

function publish(
  publisher: JetStreamPublisher,
  subject: string,
  body: string,
  msgId?: string,
  wanted: () => boolean = () => true,
): Promise<{ err: NotStoredError | undefined; duplicate: boolean }> {
  return new Promise((resolve) =>
    publisher.publish(subject, Buffer.from(body), msgId, wanted, (err, duplicate) =>
      resolve({ err, duplicate }),
    ),
  );
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

describe('JetStreamPublisher', () => {
  it('stores many publishes in flight, in the order they were handed in, and reports duplicates', async () => {
    await (await jetstreamManager(nc)).streams.add({ name: 'ORDER', subjects: ['order.>'] });
    const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log });
    const results = await Promise.all(
      Array.from({ length: 2_000 }, (_, i) => publish(publisher, 'order.a', String(i), `id-${i}`)),
    );
    expect(results.every((r) => r.err === undefined && !r.duplicate)).toBe(true);
    expect((await publish(publisher, 'order.a', 'again', 'id-7')).duplicate).toBe(true);
    const stored = await readStream<number>(nc, 'ORDER');
    expect(stored.map((m) => m.data)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
    expect(stored[7]!.msgId).toBe('id-7');
    expect(publisher.inFlight).toBe(0);
    publisher.close();
  });

  it('retries while no stream answers, and stores once one exists', async () => {
    const retried: string[] = [];
    const publisher = new JetStreamPublisher(nc, {
      ackTimeoutMs: 5_000,
      log,
      maxRetryDelayMs: 100,
      observer: { retried: (why) => retried.push(why) },
    });
    const pending = publish(publisher, 'late.x', '"hello"', 'late-1');
    while (retried.length < 2) await new Promise((r) => setTimeout(r, 20));
    await (await jetstreamManager(nc)).streams.add({ name: 'LATE', subjects: ['late.>'] });
    expect((await pending).err).toBeUndefined();
    expect(retried.every((why) => why === 'no_responders')).toBe(true);
    expect((await readStream(nc, 'LATE')).map((m) => m.data)).toEqual(['hello']);
    publisher.close();
  });

  it('gives a publish up once nobody waits for it any more', async () => {
    const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log, maxRetryDelayMs: 50 });
    let wanted = true;
    const pending = publish(publisher, 'nowhere.x', '1', undefined, () => wanted);
    await new Promise((r) => setTimeout(r, 100));
    wanted = false;
    const { err } = await pending;
    expect(err?.code).toBe('NOT_STORED');
    expect(err?.message).toMatch(/abandoned/);
    expect(publisher.inFlight).toBe(0);
    publisher.close();
  });

  it('isolates a callback that throws: later acks still arrive', async () => {
    await (await jetstreamManager(nc)).streams.add({ name: 'ISO', subjects: ['iso.>'] });
    const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log });
    publisher.publish(
      'iso.a',
      Buffer.from('1'),
      undefined,
      () => true,
      () => {
        throw new Error('bug in a callback');
      },
    );
    expect((await publish(publisher, 'iso.a', '2')).err).toBeUndefined();
    publisher.close();
  });

  it('fails what is still in flight when closed, and refuses new work', async () => {
    const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 5_000, log, maxRetryDelayMs: 1_000 });
    const pending = publish(publisher, 'nowhere.y', '1');
    await new Promise((r) => setTimeout(r, 50));
    expect(await publisher.settle(10)).toBe(1);
    publisher.close();
    expect((await pending).err?.message).toMatch(/closed/);
    expect((await publish(publisher, 'nowhere.y', '2')).err?.message).toMatch(/closed/);
  });

  it('holds a publish JetStream has no room for, names the stream, and stores it once there is room', async () => {
    const jsm = await jetstreamManager(nc);
    // A stream full at its own limit answers 10077 "maximum bytes exceeded" (a full store: 10023).
    await jsm.streams.add({
      name: 'ROOM',
      subjects: ['room.>'],
      max_bytes: 2_048,
      discard: DiscardPolicy.New,
    });
    const retried: string[] = [];
    const publisher = new JetStreamPublisher(nc, {
      ackTimeoutMs: 5_000,
      log,
      maxRetryDelayMs: 100,
      observer: { retried: (why) => retried.push(why) },
    });
    expect((await publish(publisher, 'room.a', JSON.stringify('x'.repeat(1_500)))).err).toBeUndefined();
    expect(publisher.refusals()).toEqual([]);
    const held = publish(publisher, 'room.a', JSON.stringify('y'.repeat(1_500)));
    while (retried.length < 2) await new Promise((r) => setTimeout(r, 20));
    expect(retried.every((why) => why === 'no_room')).toBe(true);
    expect(publisher.refusals()).toEqual([{ stream: 'ROOM', reason: 'maximum bytes exceeded' }]);
    // With nobody waiting any more, the mark lapses by itself (10 s at most).
    expect(publisher.refusals(Date.now() + 10_000)).toEqual([]);

    await jsm.streams.purge('ROOM');
    expect((await held).err).toBeUndefined();
    expect(publisher.refusals()).toEqual([]);
    expect((await readStream<string>(nc, 'ROOM')).map((m) => m.data)).toEqual(['y'.repeat(1_500)]);
    publisher.close();
  });

  it('says when JetStream answers nothing at all, and stops once it answers again', async () => {
    // A subscriber that never replies stands in for a server whose store hangs (a disk really full).
    const mute = nc.subscribe('mute.>', { callback: () => {} });
    await (await jetstreamManager(nc)).streams.add({ name: 'HEARD', subjects: ['heard.>'] });
    const publisher = new JetStreamPublisher(nc, { ackTimeoutMs: 100, log });
    let wanted = true;
    const unanswered = publish(publisher, 'mute.a', '1', undefined, () => wanted);
    expect(publisher.unansweredForMs()).toBeUndefined();
    while (publisher.unansweredForMs() === undefined) await new Promise((r) => setTimeout(r, 20));
    expect(publisher.unansweredForMs()).toBeGreaterThanOrEqual(300);
    expect((await publish(publisher, 'heard.a', '2')).err).toBeUndefined();
    expect(publisher.unansweredForMs()).toBeUndefined();
    wanted = false;
    await unanswered;
    mute.unsubscribe();
    publisher.close();
  });
});
