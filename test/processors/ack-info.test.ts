import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AckInfo, ackInfo, replyOf } from '../../processors/consume/ack-info.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const blank = (): AckInfo => ({ streamSequence: -1, deliverySequence: -1, pending: -1 });

let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

describe('ackInfo', () => {
  it("reads what nats.js' msg.info reads, from messages of a real consumer", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'ACKINFO', subjects: ['ackinfo.>'] });
    const js = jetstream(nc);
    for (let i = 0; i < 5; i++) await js.publish(`ackinfo.${i % 2}`, `m${i}`);
    await jsm.consumers.add('ACKINFO', {
      durable_name: 'odd',
      filter_subject: 'ackinfo.1',
      ack_policy: AckPolicy.Explicit,
    });
    const consumer = await js.consumers.get('ACKINFO', 'odd');
    const batch = await consumer.fetch({ max_messages: 2, expires: 2_000 });
    let seen = 0;
    for await (const msg of batch) {
      const read = ackInfo(replyOf(msg), blank());
      expect(read, 'nats.js 3 still carries the reply subject on JsMsg').toBeDefined();
      expect(read).toEqual({
        streamSequence: msg.info.streamSequence,
        deliverySequence: msg.info.deliverySequence,
        pending: msg.info.pending,
      });
      msg.ack();
      seen++;
    }
    expect(seen).toBe(2);
  });

  it('reads both forms nats-server sends, and nothing else', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 2 ** 50 }),
        fc.nat({ max: 2 ** 50 }),
        fc.nat({ max: 2 ** 50 }),
        fc.constantFrom('old', 'new', 'new+token'),
        (sseq, dseq, pending, form) => {
          const tail = `3.${sseq}.${dseq}.1765000000000000000.${pending}`;
          const reply =
            form === 'old'
              ? `$JS.ACK.TELEMETRY.proc-p3.${tail}`
              : `$JS.ACK._.ABCDEF.TELEMETRY.proc-p3.${tail}${form === 'new+token' ? '.x9Kq' : ''}`;
          expect(ackInfo(reply, blank())).toEqual({
            streamSequence: sseq,
            deliverySequence: dseq,
            pending,
          });
        },
      ),
    );
    for (const reply of [
      '',
      'reply.to.me',
      '$JS.ACK.S.C.1.2.3',
      '$JS.ACK.S.C.1.x.3.4.5',
      '$JS.ACK.S.C.1..3.4.5',
      '$JS.ACK.S.C.1.2.3.4.5.6.7.8.9.10',
      '$JS.ACK.S.C.1.12345678901234567.3.4.5',
      '$JS.ACK.S.C.1.9007199254740993.3.4.5',
    ])
      expect(ackInfo(reply, blank()), reply).toBeUndefined();
    expect(ackInfo(undefined, blank())).toBeUndefined();
  });
});
