import { type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
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

export interface StreamSettings {
  telemetryMaxAgeMs: number;
  dedupWindowMs: number;
  replicas: number;
}

const DEADLETTER_MAX_AGE_MS = 30 * 24 * 3_600_000;
const PRESENCE_MAX_AGE_MS = 7 * 24 * 3_600_000;

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
    },
    { ...common, name: PRESENCE_STREAM, subjects: [PRESENCE_SUBJECTS], max_age: nanos(PRESENCE_MAX_AGE_MS) },
  ];
}

/**
 * Creates the streams the gateway writes to, or brings the settings it owns up to date. A stream an
 * operator changed in ways the server will not update (e.g. storage type) is left alone and logged.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  settings: StreamSettings,
  log: Logger,
): Promise<void> {
  for (const desired of desiredStreams(settings)) await ensureStream(jsm, desired, log);
}
