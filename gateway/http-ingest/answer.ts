import type { ReadingOutcomes } from '../ingest/telemetry-handler.js';

/**
 * The `code` of an HTTP ingest answer that is not a 200 (README, HTTP ingest, keeps a row for each).
 * A rejected reading inside a 200 carries a dead-letter reason code instead (contract/rejections.ts).
 */
export const HTTP_INGEST_CODES = {
  NOT_FOUND: 'no such route: `POST /v1/devices/{id}/telemetry` or `/status`',
  METHOD_NOT_ALLOWED: 'only POST',
  UNAUTHORIZED: 'no credentials, or not a device id and its secret (HTTP Basic)',
  FORBIDDEN: 'the credentials are another device’s than the path’s, or the device is disabled',
  PAYLOAD_TOO_LARGE: 'body larger than MAX_PAYLOAD_BYTES; nothing of it is stored',
  UNSUPPORTED_MEDIA_TYPE: 'Content-Type other than application/json',
  PAYLOAD_REJECTED:
    'the body as a whole is no payload (not JSON, an empty batch, too many readings): see `rejected`',
  RATE_LIMITED:
    'the device is a whole burst past its rate, or the source past AUTH_FAILURES_PER_MINUTE: see Retry-After',
  SERVER_BUSY: 'AUTH_VERIFY_QUEUE secret checks already waiting: see Retry-After',
  NATS_UNAVAILABLE: 'the gateway cannot reach NATS: nothing was stored, send again (Retry-After)',
  NOT_STORED:
    'JetStream did not confirm all of it within HTTP_INGEST_STORE_TIMEOUT_MS: `stored` says what it did, `unconfirmed` what it may not have stored; send again',
} as const;

export type HttpIngestCode = keyof typeof HTTP_INGEST_CODES;

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

export function failure(status: number, code: HttpIngestCode, detail: string, retryAfterS?: number): Answer {
  return {
    status,
    body: { code, detail },
    ...(retryAfterS === undefined ? {} : { headers: { 'retry-after': String(retryAfterS) } }),
  };
}

/**
 * A telemetry request's answer once every part of it was stored or given up: 200 with what became of
 * each reading; 400 when the body as a whole was refused (its dead letter stored); 503 when any part
 * was not confirmed stored, saying which were, so that a client can tell what its retry will add.
 */
export function telemetryAnswer(outcomes: ReadingOutcomes, stored: boolean, retryAfterS: number): Answer {
  const rejected = outcomes.rejected.map((r) => ({
    index: r.index ?? null,
    code: r.reason,
    detail: r.detail,
  }));
  if (!stored)
    return {
      status: 503,
      headers: { 'retry-after': String(retryAfterS) },
      body: {
        code: 'NOT_STORED' satisfies HttpIngestCode,
        detail: HTTP_INGEST_CODES.NOT_STORED,
        stored: outcomes.stored,
        duplicates: outcomes.duplicates,
        unconfirmed: [...outcomes.unconfirmed].sort((a, b) => a - b),
        rejected,
      },
    };
  const whole = rejected.length === 1 && rejected[0]!.index === null;
  return {
    status: whole ? 400 : 200,
    body: {
      ...(whole ? { code: 'PAYLOAD_REJECTED' satisfies HttpIngestCode } : {}),
      stored: outcomes.stored,
      duplicates: outcomes.duplicates,
      rejected,
    },
  };
}
