import { type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import type { Logger } from '../../common/logger.js';
import { type DesiredStream, ensureStream } from '../../common/streams.js';
import { WINDOWS_STREAM, WINDOWS_SUBJECTS } from '../../contract/subjects.js';

export interface WindowsStreamSettings {
  replicas: number;
  /** The rollup horizon H (RollupOwner's `horizonMs`). */
  horizonMs: number;
}

/**
 * A rollup owner replays the last 2×H on start (see RollupOwner); a third H keeps that span in the
 * stream even when the owner's clock is ahead of the server's or a failover takes a while.
 */
export const WINDOWS_MAX_AGE_HORIZONS = 3;
/** The server's default; JetStream refuses a duplicate window longer than max_age, so it is capped. */
const DUPLICATE_WINDOW_MS = 2 * 60_000;

export function desiredWindowsStream(s: WindowsStreamSettings): DesiredStream {
  return {
    name: WINDOWS_STREAM,
    subjects: [WINDOWS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: s.replicas,
    max_age: nanos(WINDOWS_MAX_AGE_HORIZONS * s.horizonMs),
    duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, WINDOWS_MAX_AGE_HORIZONS * s.horizonMs)),
  };
}

/**
 * Creates stream WINDOWS, or brings the settings the processors own up to date (as the gateway's
 * ensureStreams does for its streams). A stream the server will not update is left alone and logged
 * when a logger is given, else the error is thrown.
 */
export async function ensureWindowsStream(
  jsm: JetStreamManager,
  settings: WindowsStreamSettings,
  log?: Logger,
): Promise<void> {
  await ensureStream(jsm, desiredWindowsStream(settings), log);
}
