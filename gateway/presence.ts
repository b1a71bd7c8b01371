import type { Logger } from '../common/logger.js';
import type { PresenceEvent } from '../contract/event.js';
import { presenceSubject } from '../contract/subjects.js';
import type { JetStreamPublisher } from './jetstream-publisher.js';

/**
 * Publishes connection lifecycle events to PRESENCE. They are not tied to a waiting device, so each
 * is retried for a bounded time: an outage longer than that loses presence edges (the processors'
 * heartbeat timeout still marks silent devices offline), never telemetry.
 */
export const PRESENCE_RETRY_WINDOW_MS = 60_000;

const encoder = new TextEncoder();

export class PresencePublisher {
  constructor(
    private readonly publisher: JetStreamPublisher,
    private readonly gatewayId: string,
    private readonly log: Logger,
  ) {}

  publish(event: Omit<PresenceEvent, 'at' | 'gateway'>, done?: (err?: Error) => void): void {
    const full: PresenceEvent = { ...event, at: new Date().toISOString(), gateway: this.gatewayId };
    const giveUpAt = Date.now() + PRESENCE_RETRY_WINDOW_MS;
    this.publisher.publish(
      presenceSubject(event.tenant, event.deviceId),
      encoder.encode(JSON.stringify(full)),
      undefined,
      () => Date.now() < giveUpAt,
      (err) => {
        if (err)
          this.log.warn(
            { device: event.deviceId, type: event.type, err: err.message },
            'presence event lost',
          );
        done?.(err);
      },
    );
  }
}

/** A status payload is kept as JSON when it is JSON, else as text. */
export function decodeStatus(payload: Buffer, maxBytes: number): unknown {
  const text = payload.subarray(0, maxBytes).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
