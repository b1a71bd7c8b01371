import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './processes.js';

const run = promisify(execFile);

/** Debian's broker (package `mosquitto`), in /usr/sbin. */
const MOSQUITTO_BIN = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto';
const START_TIMEOUT_MS = 10_000;
const LOG_TAIL_CHARS = 64 * 1024;

/**
 * A real mosquitto, as a site runs it, on a free loopback port with its config in a temp dir; stopped
 * by pid. Its log (`log_type all` to stderr, which is not buffered) is kept for the test to read.
 */
export interface Mosquitto {
  readonly port: number;
  readonly pid: number | undefined;
  /** The last 64 KiB of its log. */
  log(): string;
  /** Kills it (SIGKILL) and deletes its temp dir. */
  dispose(): Promise<void>;
}

/**
 * Starts mosquitto with `config`, in which `{port}` is replaced by the free port it listens on (for a
 * `listener {port} 127.0.0.1` line). The kit adds the log settings.
 */
export async function startMosquitto(config: string): Promise<Mosquitto> {
  const dir = await mkdtemp(join(tmpdir(), 'mosquitto-'));
  const port = await freePort();
  const file = join(dir, 'mosquitto.conf');
  await writeFile(
    file,
    `${config.replaceAll('{port}', String(port))}\nlog_dest stderr\nlog_type all\nconnection_messages true\n`,
  );
  let log = '';
  const child: ChildProcess = spawn(MOSQUITTO_BIN, ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const append = (d: string) => {
    log = (log + d).slice(-LOG_TAIL_CHARS);
  };
  child.stdout!.setEncoding('utf8').on('data', append);
  child.stderr!.setEncoding('utf8').on('data', append);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!log.includes(`Opening ipv4 listen socket on port ${port}`)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`mosquitto did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    pid: child.pid,
    log: () => log,
    async dispose() {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, 'SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Publishes to a local broker anonymously with mosquitto_pub, as a device on a site would. */
export async function publishLocal(
  port: number,
  topic: string,
  message: string,
  qos: 0 | 1 = 1,
): Promise<void> {
  await run(
    'mosquitto_pub',
    ['-h', '127.0.0.1', '-p', String(port), '-q', String(qos), '-t', topic, '-m', message],
    { timeout: 10_000 },
  );
}
