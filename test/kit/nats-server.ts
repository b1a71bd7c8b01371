import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Debian installs nats-server in /usr/sbin, which is not on a normal user's PATH. */
const NATS_SERVER_BIN =
  process.env.NATS_SERVER_BIN ??
  (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');

/**
 * A real nats-server with JetStream on a random loopback port and a temp store, stopped by pid.
 * `restart()` keeps the store and the port, as a crashed-and-restarted server would.
 */
export interface NatsServerOptions {
  /** Extra config file text (e.g. an `mqtt { … }` block); the kit adds port, host and JetStream. */
  extraConfig?: string;
  /** Extra lines inside the `jetstream { … }` block (e.g. `max_file_store: 32MB` for a small store). */
  jetstream?: string;
  /** Reuse a store dir (and its streams) instead of a fresh temp one. */
  storeDir?: string;
  port?: number;
  serverName?: string;
}

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  /** The MQTT listener's port when extraConfig has an `mqtt { … }` block (`port: -1` picks a free one). */
  readonly mqttPort: number | undefined;
  readonly storeDir: string;
  readonly pid: number | undefined;
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<void>;
  /** Stops the server and deletes its store. */
  dispose(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;

const CLIENT_LISTEN_LOG = /Listening for client connections on [^\s]+:(\d+)/;
const MQTT_LISTEN_LOG = /Listening for MQTT clients on [a-z]+:\/\/[^\s]+:(\d+)/;

interface Launched {
  child: ChildProcess;
  port: number;
  mqttPort: number | undefined;
}

function launch(configPath: string): Promise<Launched> {
  return new Promise((resolve, reject) => {
    const child = spawn(NATS_SERVER_BIN, ['-c', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`nats-server did not start within ${START_TIMEOUT_MS} ms:\n${log}`));
    }, START_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error('nats-server is not installed: run `npm run setup`')
          : err,
      );
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code} before it was ready:\n${log}`));
    });
    child.stderr!.setEncoding('utf8');
    const onData = (chunk: string) => {
      log += chunk;
      const match = CLIENT_LISTEN_LOG.exec(log);
      if (match && log.includes('Server is ready')) {
        // The MQTT listener starts before the server reports ready, so its line is already in.
        const mqtt = MQTT_LISTEN_LOG.exec(log);
        clearTimeout(timer);
        child.removeAllListeners('exit');
        // Keep draining stderr so the server never blocks on a full pipe.
        child.stderr!.off('data', onData);
        child.stderr!.resume();
        resolve({ child, port: Number(match[1]), mqttPort: mqtt ? Number(mqtt[1]) : undefined });
      }
    };
    child.stderr!.on('data', onData);
  });
}

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const ownStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), 'nats-js-')));
  const configPath = join(storeDir, 'server.conf');
  let port = options.port ?? -1;
  const writeConfig = () =>
    writeFile(
      configPath,
      [
        `host: 127.0.0.1`,
        `port: ${port}`,
        `server_name: ${options.serverName ?? `test_${process.pid}`}`,
        `jetstream {\n  store_dir: "${join(storeDir, 'js')}"\n  ${options.jetstream ?? ''}\n}`,
        options.extraConfig ?? '',
      ].join('\n'),
    );
  await writeConfig();
  let { child, port: bound, mqttPort } = await launch(configPath);
  port = bound;

  const server: NatsServer = {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get mqttPort() {
      return mqttPort;
    },
    storeDir,
    get pid() {
      return child.pid;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const exited = waitExit(child);
      // A server that already exited (by a signal too) is not signalled: its pid may be reused.
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
        process.kill(child.pid, signal);
      await exited;
    },
    async restart() {
      await server.stop();
      await writeConfig();
      ({ child, port: bound, mqttPort } = await launch(configPath));
    },
    async dispose() {
      await server.stop('SIGKILL');
      if (ownStore) await rm(storeDir, { recursive: true, force: true });
    },
  };
  return server;
}
