import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';

/**
 * `npm start`: the pipeline on one machine. Uses NATS_URL when set, or a nats-server already
 * listening on 4222; otherwise starts one with JetStream in ./.data/nats. Then starts the gateway.
 * Ctrl-C (or SIGTERM) stops the children in reverse order, each by its pid: the gateway drains into
 * NATS before NATS goes. Children run in their own process group so that the terminal's Ctrl-C
 * reaches only this supervisor, which then decides the order.
 */
const DATA_DIR = join(process.cwd(), '.data');
const DEFAULT_NATS_PORT = 4222;
const children: { name: string; child: ChildProcess }[] = [];
let stopping = false;

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function start(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(command, args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, ...env },
    detached: true,
  });
  child.once('error', (err: NodeJS.ErrnoException) => {
    console.error(
      err.code === 'ENOENT'
        ? `start: '${command}' is not installed; run \`npm run setup\` first`
        : `start: ${name}: ${err.message}`,
    );
    void stop(1);
  });
  child.once('exit', (code, signal) => {
    if (!stopping) {
      console.error(`start: ${name} exited (${signal ?? code}); stopping everything`);
      void stop(1);
    }
  });
  children.push({ name, child });
  return child;
}

async function stop(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const { child } of children.reverse()) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid, 'SIGTERM');
    const killer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
  }
  process.exit(exitCode);
}

async function waitFor(port: number, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await listening(port))) {
    if (stopping) return;
    if (Date.now() > deadline) throw new Error(`${what} did not come up on port ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  // `on`, not `once`: tsx relays the terminal's SIGINT too, and a second one must not kill us mid-stop.
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  // Detached children would outlive a supervisor that dies some other way.
  process.once('exit', () => {
    for (const { child } of children)
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
  });
  let natsUrl = process.env.NATS_URL;
  if (natsUrl === undefined) {
    natsUrl = `nats://127.0.0.1:${DEFAULT_NATS_PORT}`;
    if (await listening(DEFAULT_NATS_PORT)) {
      console.log(`start: using the nats-server already on ${natsUrl}`);
    } else {
      const store = join(DATA_DIR, 'nats');
      mkdirSync(store, { recursive: true });
      start('nats-server', 'nats-server', [
        '-a',
        '127.0.0.1',
        '-p',
        String(DEFAULT_NATS_PORT),
        '-js',
        '-sd',
        store,
        '-l',
        join(DATA_DIR, 'nats-server.log'),
      ]);
      console.log(`start: nats-server with JetStream in ${store}, log in .data/nats-server.log`);
      await waitFor(DEFAULT_NATS_PORT, 'nats-server');
    }
  }
  start('gateway', process.execPath, ['--import', 'tsx', 'gateway/main.ts'], { NATS_URL: natsUrl });
  const mqttPort = Number(process.env.MQTT_PORT ?? 1883);
  const httpPort = Number(process.env.HTTP_PORT ?? 8080);
  await waitFor(mqttPort, 'gateway');
  console.log(
    [
      '',
      `  MQTT        mqtt://127.0.0.1:${mqttPort}   (WebSocket: ws://127.0.0.1:${process.env.MQTT_WS_PORT ?? 8083})`,
      `  NATS        ${natsUrl}`,
      `  metrics     http://127.0.0.1:${httpPort}/metrics   readiness: /readyz`,
      '',
      '  add a device:  npm run devices -- add dev-1 --tenant acme',
      `  publish:       mosquitto_pub -p ${mqttPort} -i dev-1 -u dev-1 -P <secret> -q 1 \\`,
      `                   -t devices/dev-1/telemetry -m '{"metrics":{"temperature":21.5}}'`,
      '  stop:          Ctrl-C',
      '',
    ].join('\n'),
  );
}

main().catch((err: Error) => {
  console.error(`start: ${err.message}`);
  void stop(1);
});
