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
