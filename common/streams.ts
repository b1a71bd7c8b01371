import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import type { Logger } from './logger.js';

/** A stream as a stage wants it: the settings it owns, on top of the server's defaults. */
export type DesiredStream = Partial<StreamConfig> & { name: string; subjects: string[] };

/**
 * Creates the stream, or brings the settings its owner manages (age, duplicate window, replicas,
 * subjects, and byte limit and discard policy when it sets them) up to date. A stream an operator
 * changed in ways the server will not update (e.g. its storage type) is left alone and logged when a
 * logger is given, else the error is thrown.
 */
export async function ensureStream(
  jsm: JetStreamManager,
  desired: DesiredStream,
  log?: Logger,
): Promise<void> {
  const name = desired.name;
  const existing = await jsm.streams.info(name).catch(() => undefined);
  if (existing === undefined) {
    await jsm.streams.add(desired);
    log?.info({ stream: name }, 'stream created');
    return;
  }
  const c = existing.config;
  const drift =
    c.max_age !== desired.max_age ||
    c.duplicate_window !== desired.duplicate_window ||
    c.num_replicas !== desired.num_replicas ||
    (desired.max_bytes !== undefined && c.max_bytes !== desired.max_bytes) ||
    (desired.discard !== undefined && c.discard !== desired.discard) ||
    !desired.subjects.every((s) => c.subjects?.includes(s));
  if (!drift) return;
  try {
    await jsm.streams.update(name, {
      ...c,
      max_age: desired.max_age!,
      duplicate_window: desired.duplicate_window!,
      num_replicas: desired.num_replicas!,
      max_bytes: desired.max_bytes ?? c.max_bytes,
      discard: desired.discard ?? c.discard,
      subjects: [...new Set([...(c.subjects ?? []), ...desired.subjects])],
    });
    log?.info({ stream: name }, 'stream settings updated');
  } catch (err) {
    if (!log) throw err;
    log.warn(
      { stream: name, err },
      'stream settings differ from the configured ones and could not be updated',
    );
  }
}
