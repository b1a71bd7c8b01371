import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { DEADLETTER_STREAM, TELEMETRY_STREAM } from '../contract/subjects.js';

/**
 * Every PUBACK must stand for a stored message: compares TELEMETRY's message count with the PUBACKs a
 * gateway sent, prints the verdict (a loud warning when they differ) and returns the stored count.
 */
export async function checkTelemetryStored(nc: NatsConnection, acked: number, who: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const stored = (await jsm.streams.info(TELEMETRY_STREAM)).state.messages;
  const deadLetters = (await jsm.streams.info(DEADLETTER_STREAM)).state.messages;
  if (stored === acked && deadLetters === 0) {
    console.log(`check: ${TELEMETRY_STREAM} holds ${stored} messages = ${acked} PUBACKs from ${who}: OK`);
  } else {
    const bar = '!'.repeat(78);
    console.warn(
      `\n${bar}\nWARNING: ${TELEMETRY_STREAM} holds ${stored} messages but ${who} sent ${acked} PUBACKs ` +
        `(difference ${stored - acked}); ${DEADLETTER_STREAM} holds ${deadLetters}.\n` +
        'More stored than acked: publishes stored but never acknowledged (cut off at drain or disconnect).\n' +
        'Fewer: PUBACKs for messages that were deduplicated or dead-lettered instead of stored.\n' +
        `${bar}\n`,
    );
  }
  return stored;
}
