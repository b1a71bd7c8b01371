import { CanonicalEvent } from '../contract/event.js';
import { telemetrySubject } from '../contract/subjects.js';
import { DEFAULT_TS_MAX_AGE_MS, DEFAULT_TS_MAX_FUTURE_MS } from '../gateway/config.js';
import { normaliseReading } from '../gateway/ingest/normalise.js';

/** Canonical events as the gateway stores them, for the benches that feed TELEMETRY directly. */
const LABEL_SITES = 10;
const PAYLOAD_VERSION = 1;

export interface Encoded {
  subject: string;
  data: Buffer;
  msgId: string | undefined;
}

export const deviceName = (d: number) => `dev-${String(d).padStart(6, '0')}`;

/**
 * One reading as the gateway would store it: its own normaliseReading builds the canonical event
 * (units, dedup id, labels), and the bytes are its JSON, as telemetry-handler.ts publishes them.
 */
export function encodeReading(
  tenant: string,
  d: number,
  seq: number,
  tsMs: number,
  receivedAtMs: number,
): Encoded {
  const deviceId = deviceName(d);
  // A few values per device and reading, so that sketches and min/max see varied input.
  const wobble = Math.sin(seq / 7 + d) * 3;
  const result = normaliseReading(
    {
      ts: tsMs,
      seq,
      metrics: [
        { name: 'temperature', value: 20 + (d % 7) + wobble, unit: 'degC' },
        { name: 'humidity', value: 40 + ((seq + d) % 20), unit: '%' },
        { name: 'pressure', value: 1013 + wobble / 2, unit: 'hPa' },
      ],
    },
    PAYLOAD_VERSION,
    0,
    {
      tenant,
      deviceId,
      labels: { type: 'sensor', site: `site-${d % LABEL_SITES}` },
      receivedAtMs,
      receivedAtIso: new Date(receivedAtMs).toISOString(),
      publishName: () => `bench${seq}`,
      deduplicate: false,
      maxFutureMs: DEFAULT_TS_MAX_FUTURE_MS,
      maxAgeMs: DEFAULT_TS_MAX_AGE_MS,
    },
  );
  if (!result.ok) throw new Error(`bench reading rejected by normaliseReading: ${result.detail}`);
  return {
    subject: telemetrySubject(tenant, deviceId),
    data: Buffer.from(JSON.stringify(result.event)),
    msgId: result.msgId,
  };
}

/** The processor skips events that do not match the contract: a bench feeding it such would time nothing. */
export function selfCheck(e: Encoded): void {
  const parsed = CanonicalEvent.safeParse(JSON.parse(e.data.toString('utf8')));
  if (!parsed.success) throw new Error(`bench events do not match CanonicalEvent: ${parsed.error.message}`);
}
