import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator, Subscription } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { Naps } from '../../common/naps.js';
import { ALERTS_PREFIX } from '../../contract/measurements.js';
import { GATEWAY_LIVE_SUBJECTS, PRESENCE_STATE_BUCKET } from '../../contract/subjects.js';
import type { LiveFeed } from './live-feed.js';

/**
 * Feeds a LiveFeed from NATS: core subscriptions to every gateway's once-a-second summary of what it
 * stored (`gateways.live.*`, live-summary.ts: the whole fleet's traffic without one delivery per
 * event) and to every alert transition (rare, so one by one); nothing durable, a restart starts from
 * zero; and a watch of KV `presence`. That bucket belongs to the processors' presence owner and may not
 * exist yet: the watch is retried every PRESENCE_RETRY_MS until it does, and started over when the
 * bucket is deleted or recreated (checked as often).
 */
export const PRESENCE_RETRY_MS = 5_000;

export interface LiveSource {
  close(): Promise<void>;
}

const isStreamNotFound = (err: unknown) =>
  err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;

export function startLiveSource(
  nc: NatsConnection,
  feed: LiveFeed,
  log: Logger,
  options: { presenceRetryMs?: number } = {},
): LiveSource {
  const retryMs = options.presenceRetryMs ?? PRESENCE_RETRY_MS;
  // The feed parses both at once and keeps none of the bytes.
  const subs: Subscription[] = [
    nc.subscribe(GATEWAY_LIVE_SUBJECTS, { callback: (_, m) => feed.onSummary(m.data) }),
    nc.subscribe(`${ALERTS_PREFIX}.>`, { callback: (_, m) => feed.onAlert(m.data) }),
  ];

  let closed = false;
  let watch: QueuedIterator<KvWatchEntry> | undefined;
  const naps = new Naps();
  const watching = (async () => {
    let announced = false;
    while (!closed) {
      try {
        const kv = await new Kvm(nc).open(PRESENCE_STATE_BUCKET);
        // Opening does not check that the bucket exists; its status does (StreamNotFound).
        const created = (await kv.status()).streamInfo.created;
        const current = await kv.watch({ key: '>' });
        watch = current;
        feed.setPresenceAvailable(true);
        if (!announced) log.info({ bucket: PRESENCE_STATE_BUCKET }, 'live view: watching presence');
        announced = true;
        // A watch outlives its bucket (it waits for the stream to come back), so a deleted or
        // recreated bucket is noticed here and the watch started over.
        const check = setInterval(() => {
          kv.status().then(
            (status) => status.streamInfo.created !== created && current.stop(),
            (err: unknown) => isStreamNotFound(err) && current.stop(),
          );
        }, retryMs);
        try {
          for await (const e of current) {
            feed.onPresence(e.key, e.operation === 'PUT' ? e.value : undefined);
          }
        } finally {
          clearInterval(check);
        }
      } catch (err) {
        if (closed) break;
        if (!isStreamNotFound(err))
          log.warn({ err }, `live view: cannot watch KV ${PRESENCE_STATE_BUCKET}; retrying`);
      }
      watch = undefined;
      feed.setPresenceAvailable(false);
      if (!closed) await naps.sleep(retryMs);
    }
  })();

  return {
    async close() {
      closed = true;
      for (const sub of subs) sub.unsubscribe();
      watch?.stop();
      naps.wakeAll();
      await watching;
    },
  };
}
