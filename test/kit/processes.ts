import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Started {
  child: ChildProcess;
  output(): { stdout: string; stderr: string };
  finished: Promise<Finished>;
  /** Kills by pid (SIGKILL unless told otherwise) if still running. */
  kill(signal?: NodeJS.Signals): void;
}

/** Runs a TypeScript entry point of this repo the way npm scripts do (node --import tsx). */
export function startScript(script: string, args: string[] = [], env: Record<string, string> = {}): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: process.cwd(),
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const finished = new Promise<Finished>((resolve) =>
    child.once('exit', (code, signal) => {
      // Let the pipes drain what the process wrote last.
      setImmediate(() => resolve({ code, signal, stdout, stderr }));
    }),
  );
  return {
    child,
    output: () => ({ stdout, stderr }),
    finished,
    kill(signal = 'SIGKILL') {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
        process.kill(child.pid, signal);
    },
  };
}

export function runScript(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<Finished> {
  return startScript(script, args, env).finished;
}

/** Ports this process has handed out: the OS may offer a closed one again before its user binds it. */
const handedOut = new Set<number>();

/**
 * A port nothing listens on right now (the OS picks it), and never one this process handed out
 * before: two services started at once (two gateways, each with three ports) once got the same
 * port, and the second died on EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const port = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}
