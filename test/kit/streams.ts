import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';

export interface StoredMessage<T> {
  subject: string;
  seq: number;
  data: T;
  msgId: string | undefined;
}

/** Every message currently in a stream (optionally under one subject filter), in stream order. */
export async function readStream<T = unknown>(
  nc: NatsConnection,
  stream: string,
  filter?: string,
): Promise<StoredMessage<T>[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  if (info.state.messages === 0) return [];
  const consumer = await jetstream(nc).consumers.get(stream, {
    deliver_policy: DeliverPolicy.All,
    ...(filter ? { filter_subjects: [filter] } : {}),
  });
  const out: StoredMessage<T>[] = [];
  const messages = await consumer.fetch({ max_messages: 100_000, expires: 2_000 });
  for await (const m of messages) {
    out.push({
      subject: m.subject,
      seq: m.seq,
      data: m.json<T>(),
      msgId: m.headers?.get('Nats-Msg-Id') || undefined,
    });
    if (m.info.pending === 0) break;
  }
  return out;
}

/** Polls until `predicate` holds for the stream's contents, or fails after timeoutMs. */
export async function waitForStream<T = unknown>(
  nc: NatsConnection,
  stream: string,
  predicate: (messages: StoredMessage<T>[]) => boolean,
  timeoutMs = 10_000,
  filter?: string,
): Promise<StoredMessage<T>[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const messages = await readStream<T>(nc, stream, filter);
    if (predicate(messages)) return messages;
    if (Date.now() > deadline) {
      throw new Error(
        `stream ${stream} did not reach the expected state; it holds ${messages.length} messages`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
