import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type NatsServer, startNatsServer } from '../../kit/nats-server.js';
import { freePort, type Started, startScript } from '../../kit/processes.js';
import { startVictoriaMetrics, type Tsdb } from '../../kit/victoria-metrics.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * The whole pipeline for a fault drill, each part a real process a drill can kill by pid:
 * nats-server and VictoriaMetrics (test/kit: restartable on the same store and port), the gateway
 * and the processors as child processes started the way `npm run gateway` / `npm run processors`
 * start them (node --import tsx, configuration in the environment). Every port is ephemeral and
 * chosen once, so a restarted gateway listens where its devices reconnect.
 */
export interface PipelineOptions {
  /** Processor instances sharing the partitions (default 1). */
  processors?: number;
  /**
   * The processors' IDLE_TIMEOUT. It must outlast any pause of a device's readings the drill causes
   * (a device silent longer has its windows closed on wall time, and what it sent meanwhile becomes
   * late, kept raw only: documented behaviour, not loss), and it delays the run's last windows.
   */
  idleTimeout?: string;
  /** Connect the gateway to NATS through a TcpProxy the drill controls (drill 5). */
  gatewayViaProxy?: boolean;
  /** Extra environment for every processor. */
  processorEnv?: Record<string, string>;
  /**
   * The gateway's GATEWAY_WORKERS. 1 by default, whatever the machine's cores: the other drills are
   * about one gateway process (drill 1 kills it, with its workers it would be a different drill).
   */
  gatewayWorkers?: number;
}

const READY_TIMEOUT_MS = 60_000;
const POLL_MS = 100;
const LOG_TAIL_CHARS = 8_000;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` holds; throws naming `what` after timeoutMs. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

/** A gateway or processor child process; `restart()` starts it again with the same environment. */
export class ServiceProcess {
  private run: Started;
  /** Logs of earlier incarnations, kept for the diagnostics of a failed drill. */
  private history = '';

  constructor(
    readonly name: string,
    readonly script: string,
    readonly env: Record<string, string>,
    readonly httpPort: number,
  ) {
    this.run = startScript(script, [], env);
  }

  get pid(): number | undefined {
    return this.run.child.pid;
  }

  get running(): boolean {
    return this.run.child.exitCode === null && this.run.child.signalCode === null;
  }

  async ready(timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    await until(
      async () => {
        if (!this.running) {
          const { stderr } = this.run.output();
          throw new Error(`${this.name} exited before it was ready:\n${stderr.slice(-LOG_TAIL_CHARS)}`);
        }
        const status = await fetch(`http://127.0.0.1:${this.httpPort}/readyz`).then(
          (r) => r.status,
          () => 0,
        );
        return status === 200;
      },
      `${this.name} to answer /readyz`,
      timeoutMs,
    );
  }

  /** Sends `signal` by pid and, unless it only pauses the process, waits for it to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    this.run.kill(signal);
    if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') await this.run.finished;
  }

  async restart(): Promise<void> {
    if (this.running) await this.kill();
    const { stdout, stderr } = this.run.output();
    this.history += stdout + stderr;
    this.run = startScript(this.script, [], this.env);
    await this.ready();
  }

  /**
   * A gauge or counter from /metrics: the sum over its label sets, or those containing `label`
   * (e.g. `outcome="duplicate"`); undefined when the process does not answer.
   */
  async metric(name: string, label?: string): Promise<number | undefined> {
    const text = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`).then(
      (r) => (r.ok ? r.text() : undefined),
      () => undefined,
    );
    if (text === undefined) return undefined;
    let total: number | undefined;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))) {
      if (label !== undefined && !(m[1] ?? '').includes(label)) continue;
      total = (total ?? 0) + Number(m[2]);
    }
    return total;
  }

  logTail(): string {
    const { stdout, stderr } = this.run.output();
    return (this.history + stdout + stderr).slice(-LOG_TAIL_CHARS);
  }
}

export interface Pipeline {
  readonly nats: NatsServer;
  readonly tsdb: Tsdb;
  readonly proxy: TcpProxy | undefined;
  readonly gateway: ServiceProcess;
  readonly processors: ServiceProcess[];
  readonly mqttUrl: string;
  /** A temp dir for the drill's files (the ledger); removed by dispose(). */
  readonly dir: string;
  /** The last lines each child logged (warn and above), for a failed drill's message. */
  diagnostics(): string;
  /** Kills every child by pid and removes every temp dir. Safe to call after a failed start. */
  dispose(): Promise<void>;
}

export async function startPipeline(options: PipelineOptions = {}): Promise<Pipeline> {
  const dir = await mkdtemp(join(tmpdir(), 'fault-drill-'));
  const children: ServiceProcess[] = [];
  let nats: NatsServer | undefined;
  let tsdb: Tsdb | undefined;
  let proxy: TcpProxy | undefined;

  const dispose = async () => {
    for (const c of children) if (c.running) await c.kill('SIGKILL');
    await proxy?.close();
    await Promise.all([nats?.dispose(), tsdb?.dispose()]);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    [nats, tsdb] = await Promise.all([startNatsServer(), startVictoriaMetrics()]);
    if (options.gatewayViaProxy) proxy = await startTcpProxy(nats.port);
    const [mqttPort, wsPort, gatewayHttp] = [await freePort(), await freePort(), await freePort()];
    const logLevel = process.env.TEST_LOG_LEVEL ?? 'warn';
    const gateway = new ServiceProcess(
      'gateway',
      'gateway/main.ts',
      {
        NATS_URL: proxy ? `nats://127.0.0.1:${proxy.port}` : nats.url,
        MQTT_PORT: String(mqttPort),
        MQTT_WS_PORT: String(wsPort),
        HTTP_PORT: String(gatewayHttp),
        BIND_HOST: '127.0.0.1',
        LIVE_VIEW: 'false',
        LOG_LEVEL: logLevel,
        GATEWAY_WORKERS: String(options.gatewayWorkers ?? 1),
      },
      gatewayHttp,
    );
    children.push(gateway);
    const processors: ServiceProcess[] = [];
    for (let i = 0; i < (options.processors ?? 1); i++) {
      const http = await freePort();
      const processor = new ServiceProcess(
        `processor-${i}`,
        'processors/main.ts',
        {
          NATS_URL: nats.url,
          INFLUX_URL: tsdb.url,
          HTTP_PORT: String(http),
          BIND_HOST: '127.0.0.1',
          INSTANCE_ID: `drill-proc-${i}`,
          WINDOWS: '10s,1m',
          ALLOWED_LATENESS: '5s',
          IDLE_TIMEOUT: options.idleTimeout ?? '20s',
          CHECKPOINT_INTERVAL: '500ms',
          // Short, so that a killed instance's partitions move within a few seconds.
          LEASE_TTL: '3s',
          LOG_LEVEL: logLevel,
          ...options.processorEnv,
        },
        http,
      );
      children.push(processor);
      processors.push(processor);
    }
    await Promise.all(children.map((c) => c.ready()));
    const started = { nats, tsdb };
    return {
      nats: started.nats,
      tsdb: started.tsdb,
      proxy,
      gateway,
      processors,
      mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
      dir,
      diagnostics: () => children.map((c) => `--- ${c.name} (last lines)\n${c.logTail()}`).join('\n'),
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
