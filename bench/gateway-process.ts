import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../test/kit/processes.js';
import { isRunning, keepTail, killQuietly, terminate } from './child-process.js';

export { freePort };

/** The gateway as production runs it: its own Node process, configured through the environment. */
export interface GatewayProcess {
  readonly pid: number;
  readonly mqttPort: number;
  readonly httpPort: number;
  /** With GATEWAY_WORKERS above 1, the workers' pids (the primary's children, from /proc); else none. */
  workerPids(): number[];
  /** Last lines the gateway wrote, for error reports. */
  tail(): string;
  /** SIGTERM (the gateway drains, and writes its CPU profile if asked), SIGKILL after timeoutMs. */
  stop(timeoutMs?: number): Promise<void>;
  /** SIGKILL, synchronously: for process exit handlers. */
  kill(): void;
}

export interface GatewayProcessOptions {
  cwd: string;
  natsUrl: string;
  env?: Record<string, string>;
  /** Extra node flags, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
  readyTimeoutMs?: number;
}

const TAIL_LINES = 40;

export async function startGatewayProcess(o: GatewayProcessOptions): Promise<GatewayProcess> {
  const [mqttPort, wsPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  const child = spawn(process.execPath, [...(o.nodeArgs ?? []), '--import', 'tsx', 'gateway/main.ts'], {
    cwd: o.cwd,
    env: {
      ...process.env,
      NATS_URL: o.natsUrl,
      MQTT_PORT: String(mqttPort),
      MQTT_WS_PORT: String(wsPort),
      HTTP_PORT: String(httpPort),
      BIND_HOST: '127.0.0.1',
      AUTH_MODE: 'registry',
      LOG_LEVEL: 'warn',
      // One process unless a bench asks for workers (bench:ingest --workers): the other benches
      // sample the CPU of this pid and measure per-gateway bounds, which with workers are per worker.
      GATEWAY_WORKERS: '1',
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = keepTail(child, TAIL_LINES);
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not spawn the gateway');

  const gateway: GatewayProcess = {
    pid,
    mqttPort,
    httpPort,
    workerPids: () => childrenOf(pid),
    tail: () => lines.join('\n'),
    stop: (timeoutMs = 20_000) => terminate(child, timeoutMs),
    kill() {
      if (isRunning(child)) killQuietly(pid);
    },
  };

  const deadline = Date.now() + (o.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (!isRunning(child)) throw new Error(`gateway exited before it was ready:\n${gateway.tail()}`);
    const ok = await fetch(`http://127.0.0.1:${httpPort}/readyz`, {
      signal: AbortSignal.timeout(1_000),
    }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return gateway;
    if (Date.now() > deadline) {
      gateway.kill();
      throw new Error(`gateway not ready within ${o.readyTimeoutMs ?? 60_000} ms:\n${gateway.tail()}`);
    }
    await sleep(100);
  }
}

/** Linux: the pids of a process's children (its main thread's, where node:cluster forks from). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
