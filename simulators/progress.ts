import { DDSketch } from '@datadog/sketches-js';

/**
 * Counters of a running simulation, the live progress line, and the final report. The formatting
 * functions are pure; ProgressReporter only decides when to print.
 */
export class RunStats {
  sent = 0;
  acked = 0;
  /** Sends that failed or connections that broke, by kind. */
  readonly errors = new Map<string, number>();
  reconnects = 0;
  lost = 0;
  connected = 0;
  inFlight = 0;
  queued = 0;
  /** publish → acknowledgement, milliseconds (1 % relative accuracy), over the whole run. */
  readonly latency = new DDSketch({ relativeAccuracy: 0.01 });
  /** The same since `resetWindow` (a bench leaves its warm-up out). */
  window = new DDSketch({ relativeAccuracy: 0.01 });

  ackLatency(ms: number): void {
    this.latency.accept(ms);
    this.window.accept(ms);
  }

  resetWindow(): void {
    this.window = new DDSketch({ relativeAccuracy: 0.01 });
  }

  error(kind: string): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }

  get errorCount(): number {
    let n = 0;
    for (const v of this.errors.values()) n += v;
    return n;
  }
}

export interface ProgressSnapshot {
  elapsedMs: number;
  sent: number;
  acked: number;
  inFlight: number;
  queued: number;
  errors: number;
  reconnects: number;
  lost: number;
  connected: number;
  devices: number;
  /** Planned run length, when known. */
  durationMs: number | undefined;
}

const n = (v: number) => Math.round(v).toLocaleString('en-US');

export function formatProgress(now: ProgressSnapshot, before: ProgressSnapshot | undefined): string {
  const dt = before === undefined ? now.elapsedMs / 1000 : (now.elapsedMs - before.elapsedMs) / 1000;
  const rate = (a: number, b: number) => (dt > 0 ? (a - b) / dt : 0);
  const sentRate = rate(now.sent, before?.sent ?? 0);
  const ackRate = rate(now.acked, before?.acked ?? 0);
  const elapsed = `${Math.floor(now.elapsedMs / 1000)}s${now.durationMs === undefined ? '' : `/${Math.round(now.durationMs / 1000)}s`}`;
  return [
    elapsed,
    `sent ${n(sentRate)}/s`,
    `acked ${n(ackRate)}/s (${n(now.acked)})`,
    `in flight ${n(now.inFlight)}`,
    `queued ${n(now.queued)}`,
    `errors ${n(now.errors)}`,
    `reconnects ${n(now.reconnects)}`,
    `lost ${n(now.lost)}`,
    `connected ${n(now.connected)}/${n(now.devices)}`,
  ].join('  ');
}

export type ProgressMode = 'tty' | 'plain' | 'none';

export const PLAIN_PROGRESS_INTERVAL_MS = 5_000;
export const TTY_PROGRESS_INTERVAL_MS = 1_000;

/** Redraws one line on a terminal every second; elsewhere prints a plain line every 5 s. */
export class ProgressReporter {
  private timer: NodeJS.Timeout | undefined;
  private previous: ProgressSnapshot | undefined;
  private drawn = false;

  constructor(
    private readonly mode: ProgressMode,
    private readonly snapshot: () => ProgressSnapshot,
    private readonly out: NodeJS.WritableStream = process.stderr,
  ) {}

  /** Rates are measured from here on (the clock of the snapshots restarted). */
  restart(): void {
    this.previous = undefined;
  }

  start(): void {
    if (this.mode === 'none') return;
    const interval = this.mode === 'tty' ? TTY_PROGRESS_INTERVAL_MS : PLAIN_PROGRESS_INTERVAL_MS;
    this.timer = setInterval(() => this.print(), interval);
    this.timer.unref();
  }

  private print(): void {
    const now = this.snapshot();
    const line = formatProgress(now, this.previous);
    this.previous = now;
    if (this.mode === 'tty') {
      this.out.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else this.out.write(`${line}\n`);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}

export interface RunSummary {
  runId: string;
  tenant: string;
  seed: number;
  devices: number;
  connectedDevices: number;
  qos: number;
  connectMs: number;
  /** From the first scheduled publish to the last acknowledgement. */
  sendMs: number;
  sent: number;
  acked: number;
  unacked: number;
  readings: number;
  retransmissions: number;
  invalid: number;
  duplicates: number;
  late: number;
  outOfOrder: number;
  fahrenheit: number;
  /** Acknowledged publishes sent as CBOR. */
  cbor: number;
  churnReconnects: number;
  lostConnections: number;
  offlineDevices: number;
  dropped: number;
  errors: Record<string, number>;
  /** Acknowledged publishes per second over sendMs. */
  ackedPerS: number;
  latencyMs: { p50: number; p99: number; max: number } | undefined;
  ledger: string | undefined;
}

export function formatSummary(s: RunSummary): string {
  const lat = s.latencyMs;
  const rows: Array<[string, string]> = [
    ['run', `${s.runId} (tenant ${s.tenant}, seed ${s.seed})`],
    ['devices', `${n(s.connectedDevices)}/${n(s.devices)} connected in ${(s.connectMs / 1000).toFixed(1)} s`],
    s.qos === 0
      ? [
          'publishes',
          `${n(s.sent)} sent at QoS 0: written to the socket, nothing acknowledged, nothing promised`,
        ]
      : ['publishes', `${n(s.sent)} sent, ${n(s.acked)} acked (QoS ${s.qos}), ${n(s.unacked)} unacked`],
    [
      'rate',
      `${n(s.ackedPerS)} ${s.qos === 0 ? 'written' : 'acked'}/s over ${(s.sendMs / 1000).toFixed(1)} s`,
    ],
    [
      s.qos === 0 ? 'write latency' : 'ack latency',
      lat ? `p50 ${lat.p50.toFixed(1)} ms, p99 ${lat.p99.toFixed(1)} ms, max ${lat.max.toFixed(1)} ms` : '–',
    ],
    ['readings', `${n(s.readings)} acknowledged${s.cbor > 0 ? `; ${n(s.cbor)} publishes as CBOR` : ''}`],
    [
      'faults',
      `${n(s.invalid)} invalid, ${n(s.duplicates)} duplicates, ${n(s.late)} late, ` +
        `${n(s.outOfOrder)} out of order, ${n(s.fahrenheit)} in °F`,
    ],
    [
      'connections',
      `${n(s.churnReconnects)} churn reconnects, ${n(s.lostConnections)} lost, ` +
        `${n(s.offlineDevices)} devices went silent, ${n(s.retransmissions)} retransmissions`,
    ],
  ];
  if (s.dropped > 0) rows.push(['dropped', `${n(s.dropped)} samples (send buffer full)`]);
  const errors = Object.entries(s.errors);
  if (errors.length > 0) rows.push(['errors', errors.map(([k, v]) => `${k} ×${v}`).join(', ')]);
  if (s.ledger !== undefined) rows.push(['ledger', s.ledger]);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}
