import type { Logger } from '../common/logger.js';
import type { PresenceEvent } from '../contract/event.js';
import { presenceSubject } from '../contract/subjects.js';
import { clipForJson, keptPayload } from './ingest/kept-payload.js';
import type { JetStreamPublisher } from './jetstream-publisher.js';

/**
 * Publishes connection lifecycle events to PRESENCE. They are not tied to a waiting device, so each
 * is retried for a bounded time: an outage longer than that loses presence edges (the processors'
 * heartbeat timeout still marks silent devices offline), never telemetry.
 */
export const PRESENCE_RETRY_WINDOW_MS = 60_000;

/** A `lost` reason is an error message, which may quote what a peer sent: kept to this as JSON. */
const REASON_MAX_BYTES = 256;

const encoder = new TextEncoder();

export interface PresenceOptions {
  /** STATUS_MAX_PAYLOAD_BYTES: status payload bytes an event keeps. */
  statusMaxBytes: number;
  /** Called when a status payload was cut to statusMaxBytes. */
  statusTruncated?: () => void;
}

/** The fields of a status event that carry its payload. */
export type StatusFields = Pick<
  PresenceEvent,
  'status' | 'statusEncoding' | 'statusBytes' | 'statusTruncated'
>;

export class PresencePublisher {
  constructor(
    private readonly publisher: JetStreamPublisher,
    private readonly gatewayId: string,
    private readonly log: Logger,
    private readonly options: PresenceOptions,
  ) {}

  /** A status payload as an event keeps it, bounded (decodeStatus); counts a payload cut short. */
  status(payload: Uint8Array): StatusFields {
    const fields = decodeStatus(payload, this.options.statusMaxBytes);
    if (fields.statusTruncated) this.options.statusTruncated?.();
    return fields;
  }

  /** `wanted`: for an event someone waits for (an HTTP request), retried while they do, not the window. */
  publish(
    event: Omit<PresenceEvent, 'at' | 'gateway'>,
    done?: (err?: Error) => void,
    wanted?: () => boolean,
  ): void {
    const full: PresenceEvent = { ...event, at: new Date().toISOString(), gateway: this.gatewayId };
    if (full.reason !== undefined) full.reason = clipForJson(full.reason, REASON_MAX_BYTES);
    const giveUpAt = Date.now() + PRESENCE_RETRY_WINDOW_MS;
    this.publisher.publish(
      presenceSubject(event.tenant, event.deviceId),
      encoder.encode(JSON.stringify(full)),
      undefined,
      wanted ?? (() => Date.now() < giveUpAt),
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

/**
 * A status payload as a presence event keeps it: the JSON value when the whole payload is JSON (a birth
 * message, a will) that is no longer written out again than base64 would be (`1e20` is written as 21
 * digits), else its first `maxBytes` as text or base64, whichever is shorter in JSON. Never more than
 * 4/3 of the bytes kept, whatever the device sent.
 */
export function decodeStatus(payload: Uint8Array, maxBytes: number): StatusFields {
  const kept = keptPayload(payload, maxBytes);
  if (!kept.truncated && kept.encoding === 'utf8') {
    try {
      const value: unknown = JSON.parse(kept.text);
      if (Buffer.byteLength(JSON.stringify(value)) <= 4 * Math.ceil(kept.keptBytes / 3))
        return {
          status: value,
          statusEncoding: 'json',
          statusBytes: payload.byteLength,
          statusTruncated: false,
        };
    } catch {
      // Not JSON (or nested too deep to write out again): kept as text.
    }
  }
  return {
    status: kept.text,
    statusEncoding: kept.encoding,
    statusBytes: payload.byteLength,
    statusTruncated: kept.truncated,
  };
}
