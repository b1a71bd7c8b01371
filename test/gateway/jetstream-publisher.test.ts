import { jetstreamManager } from '@nats-io/jetstream';
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
});
