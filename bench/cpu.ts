import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * CPU seconds used by processes, read from /proc (Linux), so each round can say how the two cores
 * were shared between the load generator, the gateway and nats-server. Undefined where /proc is not
 * readable; the bench then prints no CPU figures.
 */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** user + system CPU seconds of a process, all its threads included. */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of proc(5); field 3 (state) is fields[0] here.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Samples named processes at two instants; `usage()` gives percent of one core for each. */
export class CpuSampler {
  private before = new Map<string, number>();
  private at = 0;
  private after = new Map<string, number>();
  private until = 0;

  constructor(private readonly pids: () => ReadonlyMap<string, number | undefined>) {}

  start(): void {
    this.before = this.sample();
    this.at = performance.now();
  }

  stop(): void {
    this.after = this.sample();
    this.until = performance.now();
  }

  /** Percent of one core per process over the sampled interval, in the order given. */
  usage(): { name: string; percent: number }[] {
    const seconds = (this.until - this.at) / 1000;
    const out: { name: string; percent: number }[] = [];
    for (const [name, end] of this.after) {
      const begin = this.before.get(name);
      if (begin !== undefined && seconds > 0) out.push({ name, percent: ((end - begin) / seconds) * 100 });
    }
    return out;
  }

  private sample(): Map<string, number> {
    const m = new Map<string, number>();
    for (const [name, pid] of this.pids()) {
      const s = processCpuSeconds(pid);
      if (s !== undefined) m.set(name, s);
    }
    return m;
  }
}

/**
 * Busy and total CPU seconds of the whole machine, all cores (/proc/stat), so a bench can tell how
 * much of the machine its own processes had; undefined where /proc is not readable.
 */
export function machineCpuSeconds(): { busy: number; total: number } | undefined {
  try {
    // `cpu  user nice system idle iowait irq softirq steal guest guest_nice`, in clock ticks.
    const fields = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    const idle = fields[3]! + fields[4]!;
    return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** Each process's CPU as µs per message, at `rate` messages a second over the sampled window. */
export function perMessage(
  usage: readonly { name: string; percent: number }[],
  rate: number,
): { name: string; percent: number; usPerMsg: number }[] {
  // percent of a core × window ÷ messages in the window.
  return usage.map((c) => ({ ...c, usPerMsg: rate > 0 ? (c.percent / 100) * (1e6 / rate) : Number.NaN }));
}
