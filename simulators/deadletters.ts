import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { DEADLETTER_PREFIX, DEADLETTER_STREAM } from '../contract/subjects.js';
import { DeadLetterReadError } from './errors.js';

/**
 * Counts a run's dead letters by reason code: the messages on `deadletter.{tenant}.>` in DEADLETTER
 * whose device belongs to the run (open auth puts every run in tenant `default`, so the tenant
 * alone does not tell runs apart).
 */
const FETCH_BATCH = 10_000;
const FETCH_EXPIRES_MS = 2_000;
const NATS_CONNECT_TIMEOUT_MS = 5_000;

export async function countDeadLetters(
  natsUrl: string,
  tenant: string,
  devicePrefix: string,
): Promise<Record<string, number>> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: natsUrl.split(',').map((s) => s.trim()),
      name: 'simulator-verify',
      timeout: NATS_CONNECT_TIMEOUT_MS,
    });
  } catch (err) {
    throw new DeadLetterReadError(`cannot reach NATS at ${natsUrl}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    return await count(nc, tenant, devicePrefix);
  } catch (err) {
    if (err instanceof DeadLetterReadError) throw err;
    throw new DeadLetterReadError(`cannot read ${DEADLETTER_STREAM}: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await nc.close().catch(() => {});
  }
}

async function count(
  nc: NatsConnection,
  tenant: string,
  devicePrefix: string,
): Promise<Record<string, number>> {
  const filter = `${DEADLETTER_PREFIX}.${tenant}.>`;
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(DEADLETTER_STREAM, { subjects_filter: filter });
  const stored = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  const counts: Record<string, number> = {};
  if (stored === 0) return counts;
  const consumer = await jetstream(nc).consumers.get(DEADLETTER_STREAM, {
    // A string, not an array: nats-server before 2.10 knows only the single filter_subject.
    filter_subjects: filter,
    deliver_policy: DeliverPolicy.All,
  });
  let seen = 0;
  while (seen < stored) {
    const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
    let got = 0;
    let done = false;
    for await (const m of batch) {
      got++;
      seen++;
      const letter = m.json<{ deviceId?: string; reason?: string }>();
      const reason = letter.reason ?? m.subject.slice(m.subject.lastIndexOf('.') + 1);
      if (letter.deviceId?.startsWith(devicePrefix)) counts[reason] = (counts[reason] ?? 0) + 1;
      if (m.info.pending === 0) {
        done = true;
        break;
      }
    }
    if (done || got === 0) break;
  }
  return counts;
}
