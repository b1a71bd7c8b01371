import { resolveVerifyOptions, type VerifyInput, type VerifyOptions } from './config.js';
import { countDeadLetters } from './deadletters.js';
import { type Ledger, readLedger } from './ledger.js';
import { createTsdbReader, type ReadQuery } from './tsdb-readers.js';
import { compareLedger, formatReport, type VerifyReport } from './verify.js';

/**
 * `simulate verify`: reads the ledger, reads the run back from the TSDB and DEADLETTER, compares,
 * and keeps trying until the answer is exact or `--wait` has passed: the last windows of a run are
 * written only once the processors' IDLE_TIMEOUT has passed, and a TSDB makes writes searchable
 * with a delay (VictoriaMetrics ~1 s).
 */
export interface VerifyResult {
  ledger: Ledger;
  report: VerifyReport;
  /** formatReport(…): what the CLI prints. */
  text: string;
  /** 0 exact (or nothing promised), 1 differences. */
  exitCode: 0 | 1;
  tsdb: 'victoria' | 'influx';
}

const RETRY_INTERVAL_MS = 2_000;
/** TS_IN_FUTURE payloads carry a time an hour ahead: read far enough to see one wrongly stored. */
const READ_AHEAD_MS = 2 * 3_600_000;

export function readQueryOf(ledger: Ledger): ReadQuery {
  const h = ledger.header;
  const first = h.firstTs ?? Date.parse(h.startedAt);
  const last = h.lastTs ?? Date.parse(h.endedAt);
  return {
    tenant: h.tenant,
    devicePrefix: h.devicePrefix,
    window: `${h.windowMs / 1000}s`,
    startMs: first - h.windowMs,
    endMs: last + READ_AHEAD_MS,
  };
}

export async function verifyLedger(
  input: VerifyInput | Readonly<VerifyOptions>,
  hooks: { log?: (line: string) => void; signal?: AbortSignal } = {},
): Promise<VerifyResult> {
  const options =
    'influx' in input && typeof input.influx === 'object'
      ? (input as VerifyOptions)
      : resolveVerifyOptions(input as VerifyInput);
  const log = hooks.log ?? (() => {});
  const ledger = await readLedger(options.ledger);
  const reader = await createTsdbReader(options.tsdb, options.influx);
  const query = readQueryOf(ledger);
  const checkDeadLetters = options.deadLetters && Object.keys(ledger.totals.invalidAcked).length > 0;
  const deadline = Date.now() + options.waitMs;
  for (let attempt = 1; ; attempt++) {
    const [observed, deadLetters] = await Promise.all([
      reader.read(query),
      checkDeadLetters
        ? countDeadLetters(options.natsUrl, ledger.header.tenant, ledger.header.devicePrefix)
        : undefined,
    ]);
    const report = compareLedger(ledger, {
      ...observed,
      ...(deadLetters === undefined ? {} : { deadLetters }),
    });
    const done = report.exact || Date.now() + RETRY_INTERVAL_MS > deadline || hooks.signal?.aborted === true;
    if (done) {
      const text = formatReport(ledger, report, { tsdb: reader.kind, url: reader.url, rows: options.rows });
      return {
        ledger,
        report,
        text,
        exitCode: report.exact || !report.promised ? 0 : 1,
        tsdb: reader.kind,
      };
    }
    log(`attempt ${attempt}: ${report.differences.length} differences; checking again`);
    await new Promise((r) => setTimeout(r, RETRY_INTERVAL_MS));
  }
}
