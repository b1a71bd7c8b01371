import type { ChildProcess } from 'node:child_process';

/** SIGKILL by pid, ignoring a process that is already gone: for cleanup paths that must not throw. */
export function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** True until the child has exited or been killed by a signal. */
export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves once the child has exited (at once if it already has). */
function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (!isRunning(child)) return resolve();
    child.once('exit', () => resolve());
  });
}

/** SIGTERM (the services drain, and write their CPU profiles if asked), SIGKILL after timeoutMs. */
export async function terminate(child: ChildProcess, timeoutMs: number): Promise<void> {
  const done = exited(child);
  if (!isRunning(child) || child.pid === undefined) return;
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => isRunning(child) && killQuietly(child.pid), timeoutMs);
  await done;
  clearTimeout(timer);
}

/**
 * Keeps the last `max` lines of a child's stdout and stderr. Both pipes are always read: a service
 * blocked on a full pipe would look like a slow one.
 */
export function keepTail(child: ChildProcess, max: number): string[] {
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (lines.length > max) lines.splice(0, lines.length - max);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return lines;
}
