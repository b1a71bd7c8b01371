import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './processes.js';

/** Debian installs nats-server in /usr/sbin, which is not on a normal user's PATH. */
const NATS_SERVER_BIN =
  process.env.NATS_SERVER_BIN ??
  (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');

const CLUSTER_NAME = 'kit';
const START_TIMEOUT_MS = 15_000;
/** A meta leader needs a quorum of nodes to have found each other over routes: slow on a busy machine. */
const META_LEADER_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 100;
const LOG_TAIL_BYTES = 64 * 1024;

/**
 * Three nats-servers on loopback routed to each other (a JetStream cluster), each with its own temp
 * store, server name and free client, cluster and monitoring ports, stopped by pid. `kill()` is a
 * crash (SIGKILL); `restart()` brings a node back on the same ports and store, as a rebooted
 * machine would.
 */
export interface ClusterNode {
  /** The `server_name`, as stream info reports it in `cluster.leader` and `cluster.replicas`. */
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly clusterPort: number;
  /** The monitoring port (`/varz`, `/jsz`, …). */
  readonly httpPort: number;
  readonly storeDir: string;
  readonly pid: number | undefined;
  readonly running: boolean;
  /** The last 64 KiB of the node's log. */
  log(): string;
}

export interface NatsCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's client URL, comma-separated: what NATS_URL takes. */
  readonly urls: string;
  node(name: string): ClusterNode;
  /** SIGKILL by pid; resolves once the process is gone. */
  kill(name: string): Promise<void>;
  /** Starts a stopped node again on its ports and store, and waits until it sees a meta leader. */
  restart(name: string): Promise<void>;
  /** Polls the running nodes' `/jsz` until every one reports the same JetStream meta leader. */
  waitForMetaLeader(timeoutMs?: number): Promise<string>;
  /** Kills every node and removes the temp dir. */
  dispose(): Promise<void>;
}

export interface NatsClusterOptions {
  /** 3 unless told; JetStream needs a majority of them up. */
  size?: number;
}

interface Jsz {
  meta_cluster?: { leader?: string; cluster_size?: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

class Node implements ClusterNode {
  child: ChildProcess | undefined;
  private logTail = '';

  constructor(
    readonly name: string,
    readonly port: number,
    readonly clusterPort: number,
    readonly httpPort: number,
    readonly storeDir: string,
    readonly configPath: string,
  ) {}

  get url() {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child?.pid;
  }

  get running() {
    const c = this.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  log() {
    return this.logTail;
  }

  /** Resolves once the node logs that it is ready (JetStream may still be electing). */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(NATS_SERVER_BIN, ['-c', this.configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      this.child = child;
      let ready = false;
      const timer = setTimeout(() => {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
        reject(new Error(`${this.name} did not start within ${START_TIMEOUT_MS} ms:\n${this.logTail}`));
      }, START_TIMEOUT_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? new Error('nats-server is not installed: run `npm run setup`')
            : err,
        );
      });
      child.once('exit', (code, signal) => {
        if (ready) return;
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before it was ready:\n${this.logTail}`));
      });
      child.stderr!.setEncoding('utf8');
      // Always drained, so the server never blocks on a full pipe; the tail explains failures.
      child.stderr!.on('data', (chunk: string) => {
        this.logTail = (this.logTail + chunk).slice(-LOG_TAIL_BYTES);
        if (!ready && this.logTail.includes('Server is ready')) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = waitExit(child);
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
      process.kill(child.pid, 'SIGKILL');
    await exited;
  }

  async jsz(): Promise<Jsz | undefined> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.httpPort}/jsz`);
      return res.ok ? ((await res.json()) as Jsz) : undefined;
    } catch {
      return undefined;
    }
  }
}

function nodeConfig(node: Node, peers: readonly Node[]): string {
  return [
    `server_name: ${node.name}`,
    'host: 127.0.0.1',
    `port: ${node.port}`,
    `http: 127.0.0.1:${node.httpPort}`,
    `jetstream { store_dir: "${node.storeDir}" }`,
    'cluster {',
    `  name: ${CLUSTER_NAME}`,
    `  listen: 127.0.0.1:${node.clusterPort}`,
    `  routes: [${peers
      .filter((p) => p !== node)
      .map((p) => `nats-route://127.0.0.1:${p.clusterPort}`)
      .join(', ')}]`,
    '}',
    '',
  ].join('\n');
}

export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const size = options.size ?? 3;
  const dir = await mkdtemp(join(tmpdir(), 'nats-cluster-'));
  const nodes: Node[] = [];
  try {
    // Every port is chosen before any node starts: each config names its peers' route ports.
    for (let i = 1; i <= size; i++) {
      const name = `n${i}`;
      const storeDir = join(dir, name);
      await mkdir(storeDir);
      const [port, clusterPort, httpPort] = [await freePort(), await freePort(), await freePort()];
      nodes.push(new Node(name, port, clusterPort, httpPort, storeDir, join(dir, `${name}.conf`)));
    }
    for (const node of nodes) await writeFile(node.configPath, nodeConfig(node, nodes));
    await Promise.all(nodes.map((n) => n.start()));
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill()));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const byName = (name: string): Node => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name} in the cluster (${nodes.map((n) => n.name).join(', ')})`);
    return node;
  };

  const cluster: NatsCluster = {
    nodes,
    urls: nodes.map((n) => n.url).join(','),
    node: byName,
    kill: (name) => byName(name).kill(),
    async restart(name) {
      const node = byName(name);
      if (node.running) throw new Error(`${name} is still running`);
      await node.start();
      await cluster.waitForMetaLeader();
    },
    async waitForMetaLeader(timeoutMs = META_LEADER_TIMEOUT_MS) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const running = nodes.filter((n) => n.running);
        const leaders = await Promise.all(running.map(async (n) => (await n.jsz())?.meta_cluster?.leader));
        const first = leaders[0];
        if (first && leaders.every((l) => l === first)) return first;
        if (Date.now() > deadline) {
          throw new Error(
            `no JetStream meta leader agreed on within ${timeoutMs} ms (${running
              .map((n, i) => `${n.name}: ${leaders[i] ?? 'none'}`)
              .join(', ')})`,
          );
        }
        await sleep(POLL_INTERVAL_MS);
      }
    },
    async dispose() {
      await Promise.all(nodes.map((n) => n.kill()));
      await rm(dir, { recursive: true, force: true });
    },
  };

  try {
    await cluster.waitForMetaLeader();
  } catch (err) {
    await cluster.dispose();
    throw err;
  }
  return cluster;
}
