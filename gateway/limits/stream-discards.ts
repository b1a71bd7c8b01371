import type { JetStreamManager } from '@nats-io/jetstream';
import type { Logger } from '../../common/logger.js';

/**
 * Counts the messages DEADLETTER and PRESENCE discard for room at their byte limits. JetStream
 * discards them itself and tells no publisher, so the gateway looks at each stream every
 * `intervalMs`: while a stream is at its limit, the oldest messages that left it since the last look
 * left for room (an age limit of days hardly removes any meanwhile). Every gateway counts what it
 * sees, so with several gateways take the largest count, not their sum.
 */
export interface StreamDiscardsOptions<Setting extends string> {
  jsm: JetStreamManager;
  /** Stream name → the setting its byte limit comes from. */
  streams: Readonly<Record<string, Setting>>;
  intervalMs: number;
  discarded: (stream: string, setting: Setting, messages: number) => void;
  log: Logger;
}

/** A stream within this share of its max_bytes is at its limit: the next message discards the oldest. */
const AT_LIMIT_SHARE = 0.9;

export interface StreamLook {
  firstSeq: number;
  bytes: number;
  maxBytes: number;
}

/** Messages discarded for room between two looks at a stream. Pure. */
export function discardedForRoom(previous: StreamLook | undefined, now: StreamLook): number {
  if (previous === undefined || now.maxBytes <= 0) return 0;
  if (now.bytes < now.maxBytes * AT_LIMIT_SHARE) return 0; // purged, or not full
  return Math.max(0, now.firstSeq - previous.firstSeq);
}

export function watchStreamDiscards<Setting extends string>(
  o: StreamDiscardsOptions<Setting>,
): { close(): void } {
  const last = new Map<string, StreamLook>();
  const discarding = new Set<string>();
  const check = async () => {
    for (const [stream, setting] of Object.entries<Setting>(o.streams)) {
      try {
        const info = await o.jsm.streams.info(stream);
        const look = {
          firstSeq: info.state.first_seq,
          bytes: info.state.bytes,
          maxBytes: info.config.max_bytes,
        };
        const n = discardedForRoom(last.get(stream), look);
        last.set(stream, look);
        if (n > 0) o.discarded(stream, setting, n);
        // Said once when it starts, not at every look.
        if (n > 0 && !discarding.has(stream))
          o.log.warn(
            { stream, maxBytes: look.maxBytes, setting },
            'stream at its byte limit: discarding its oldest messages',
          );
        if (n > 0) discarding.add(stream);
        else discarding.delete(stream);
      } catch (err) {
        // NATS down or the stream deleted: the next look starts afresh.
        last.delete(stream);
        o.log.debug({ stream, err }, 'stream not looked at');
      }
    }
  };
  let running: Promise<void> | undefined;
  const look = () => {
    running ??= check().finally(() => (running = undefined));
  };
  const timer = setInterval(look, o.intervalMs);
  timer.unref();
  look();
  return { close: () => clearInterval(timer) };
}
