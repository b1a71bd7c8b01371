import { DiscardPolicy, type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import type { Logger } from '../common/logger.js';
import { type DesiredStream, ensureStream } from '../common/streams.js';
import {
  DEADLETTER_STREAM,
  DEADLETTER_SUBJECTS,
  PRESENCE_STREAM,
  PRESENCE_SUBJECTS,
  TELEMETRY_STREAM,
  TELEMETRY_SUBJECTS,
} from '../contract/subjects.js';
import { DEFAULT_DEADLETTER_MAX_BYTES, DEFAULT_PRESENCE_MAX_BYTES } from './config.js';
import { StreamReserveError } from './errors.js';

export interface StreamSettings {
  telemetryMaxAgeMs: number;
  dedupWindowMs: number;
  replicas: number;
  /** DEADLETTER_MAX_BYTES and PRESENCE_MAX_BYTES; their defaults when left out. */
  deadletterMaxBytes?: number;
  presenceMaxBytes?: number;
}

const DEADLETTER_MAX_AGE_MS = 30 * 24 * 3_600_000;
const PRESENCE_MAX_AGE_MS = 7 * 24 * 3_600_000;

/**
 * TELEMETRY is bounded by age only: what the processors have not consumed is never discarded for
 * room, and a full store makes JetStream refuse new events, which the devices then hold (no PUBACK).
 * DEADLETTER and PRESENCE are what one device can grow at will (letters, status payloads): at their
 * byte limit they discard their oldest messages, so that they can never fill the store for
 * TELEMETRY. The presence owner consumes PRESENCE within seconds; only an owner further behind than
 * PRESENCE_MAX_BYTES would miss events (README, Presence).
 */
export function desiredStreams(s: StreamSettings): DesiredStream[] {
  const common = {
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: s.replicas,
    duplicate_window: nanos(s.dedupWindowMs),
  };
  return [
    {
      ...common,
      name: TELEMETRY_STREAM,
      subjects: [TELEMETRY_SUBJECTS],
      max_age: nanos(s.telemetryMaxAgeMs),
    },
    {
      ...common,
      name: DEADLETTER_STREAM,
      subjects: [DEADLETTER_SUBJECTS],
      max_age: nanos(DEADLETTER_MAX_AGE_MS),
      max_bytes: s.deadletterMaxBytes ?? DEFAULT_DEADLETTER_MAX_BYTES,
      discard: DiscardPolicy.Old,
    },
    {
      ...common,
      name: PRESENCE_STREAM,
      subjects: [PRESENCE_SUBJECTS],
      max_age: nanos(PRESENCE_MAX_AGE_MS),
      max_bytes: s.presenceMaxBytes ?? DEFAULT_PRESENCE_MAX_BYTES,
      discard: DiscardPolicy.Old,
    },
  ];
}

/** The setting that sizes each stream with a byte limit, for errors and the limit counters. */
export const STREAM_BYTE_LIMITS = {
  [DEADLETTER_STREAM]: 'DEADLETTER_MAX_BYTES',
  [PRESENCE_STREAM]: 'PRESENCE_MAX_BYTES',
} as const;

/**
 * Creates the streams the gateway writes to, or brings the settings it owns up to date. A stream an
 * operator changed in ways the server will not update (e.g. storage type) is left alone and logged.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  settings: StreamSettings,
  log: Logger,
): Promise<void> {
  for (const desired of desiredStreams(settings)) {
    try {
      await ensureStream(jsm, desired, log);
    } catch (err) {
      // JetStream reserves a stream's max_bytes in its store when it creates the stream.
      if (desired.max_bytes !== undefined && /insufficient storage resources/i.test(String(err)))
        throw new StreamReserveError(desired.name, desired.max_bytes, err);
      throw err;
    }
  }
  const telemetry = await jsm.streams.info(TELEMETRY_STREAM);
  const { max_bytes, max_msgs, discard } = telemetry.config;
  if ((max_bytes > 0 || max_msgs > 0) && discard !== DiscardPolicy.New)
    log.warn(
      { stream: TELEMETRY_STREAM, max_bytes, max_msgs },
      'TELEMETRY discards its oldest events at its size limit, processed or not: set discard to new',
    );
}
