import { spawn } from 'node:child_process';
import { isRunning, keepTail, killQuietly, terminate } from './child-process.js';
import { freePort } from './gateway-process.js';

/**
 * A stream processor as production runs it: its own Node process (`processors/main.ts`), configured
 * through the environment, observed through its `/metrics`. Unlike the gateway helper this does not
 * wait for readiness: the bench times from the first event consumed, which it reads from `/metrics`.
 */
export interface ProcessorProcess {
  readonly pid: number;
  readonly instanceId: string;
  readonly httpPort: number;
  readonly running: boolean;
  /** Last lines the processor wrote, for error reports. */
  tail(): string;
  /** SIGTERM (the processor checkpoints, gives its leases back, writes its CPU profile if asked), SIGKILL after timeoutMs. */
  stop(timeoutMs?: number): Promise<void>;
  /** SIGKILL, synchronously: for process exit handlers. */
  kill(): void;
}

export interface ProcessorProcessOptions {
  cwd: string;
  natsUrl: string;
  influxUrl: string;
  instanceId: string;
  env?: Record<string, string>;
  /** Extra node flags, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
}

const TAIL_LINES = 40;

export async function startProcessorProcess(o: ProcessorProcessOptions): Promise<ProcessorProcess> {
  const httpPort = await freePort();
  const child = spawn(process.execPath, [...(o.nodeArgs ?? []), '--import', 'tsx', 'processors/main.ts'], {
    cwd: o.cwd,
    env: {
      ...process.env,
      NATS_URL: o.natsUrl,
      INFLUX_URL: o.influxUrl,
      HTTP_PORT: String(httpPort),
      BIND_HOST: '127.0.0.1',
      INSTANCE_ID: o.instanceId,
      LOG_LEVEL: 'warn',
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = keepTail(child, TAIL_LINES);
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not spawn the processor');

  const processor: ProcessorProcess = {
    pid,
    instanceId: o.instanceId,
    httpPort,
    get running() {
      return isRunning(child);
    },
    tail: () => lines.join('\n'),
    stop: (timeoutMs = 20_000) => terminate(child, timeoutMs),
    kill() {
      if (isRunning(child)) killQuietly(pid);
    },
  };
  return processor;
}

/** One scrape of a Prometheus text exposition: samples by metric name, with their raw label text. */
export class Scrape {
  private readonly samples = new Map<string, { labels: string; value: number }[]>();

  constructor(text: string) {
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      // `name{labels} value` or `name value`; prom-client writes no timestamps.
      const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (!match) continue;
      const list = this.samples.get(match[1]!) ?? [];
      list.push({ labels: match[2] ?? '', value: Number(match[3]) });
      this.samples.set(match[1]!, list);
    }
  }

  /** Sum over every label set, or those that contain `labels` (e.g. `kind="major"`); 0 when absent. */
  sum(name: string, labels = ''): number {
    return (this.samples.get(name) ?? []).reduce((n, s) => (s.labels.includes(labels) ? n + s.value : n), 0);
  }

  /** Largest value over every label set; NaN when absent. */
  max(name: string): number {
    const values = (this.samples.get(name) ?? []).map((s) => s.value);
    return values.length > 0 ? Math.max(...values) : Number.NaN;
  }

  /** Values of one label, e.g. the partitions of `processor_checkpoint_seq`. */
  labelValues(name: string, label: string): string[] {
    const pattern = new RegExp(`${label}="([^"]*)"`);
    return (this.samples.get(name) ?? []).flatMap((s) => pattern.exec(s.labels)?.[1] ?? []);
  }
}

/** `/metrics` of a processor, or undefined while it is not listening (starting, or gone). */
export async function scrape(httpPort: number, timeoutMs = 5_000): Promise<Scrape | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    return res.ok ? new Scrape(await res.text()) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resolves once the processor holds `partitions` partitions (its first lease rounds are done); throws
 * when it exits first or after timeoutMs. `onPoll` runs before each look (e.g. to stop on Ctrl-C).
 */
export async function waitForPartitions(
  proc: ProcessorProcess,
  partitions: number,
  timeoutMs: number,
  onPoll: () => void = () => {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await scrape(proc.httpPort))?.sum('processor_owned_partitions') !== partitions) {
    onPoll();
    if (!proc.running || Date.now() > deadline)
      throw new Error(`processor ${proc.instanceId} did not take ${partitions} partitions:\n${proc.tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
