/**
 * The one line every fault drill prints, so a CI log shows what each drill survived:
 * `drill, sent, acked, stored, aggregated, lost, duplicated`. `lost` and `duplicated` must be 0.
 */
export interface DrillResult {
  drill: string;
  /** Readings the simulator published (including ones never acknowledged). */
  sent: number;
  /** Readings whose publish the gateway acknowledged (the ledger). */
  acked: number;
  /** Acknowledged readings found in the TELEMETRY stream. */
  stored: number;
  /** Acknowledged readings counted in the 10 s aggregates of the TSDB (-1: this drill does not aggregate). */
  aggregated: number;
  /** Acknowledged readings missing from the stream or the aggregates. */
  lost: number;
  /** Readings stored or aggregated more than once. */
  duplicated: number;
}

export const DRILL_HEADER = 'drill, sent, acked, stored, aggregated, lost, duplicated';

export function formatDrill(r: DrillResult): string {
  const aggregated = r.aggregated < 0 ? 'n/a' : String(r.aggregated);
  return `${r.drill}, ${r.sent}, ${r.acked}, ${r.stored}, ${aggregated}, ${r.lost}, ${r.duplicated}`;
}

/** Printed on stdout outside vitest's console capture, so it shows in CI logs whatever the reporter. */
export function printDrill(r: DrillResult): void {
  process.stdout.write(`[fault drill] ${DRILL_HEADER}\n[fault drill] ${formatDrill(r)}\n`);
}
