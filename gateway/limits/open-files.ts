import { readFileSync } from 'node:fs';

/**
 * The process's limit on open files (RLIMIT_NOFILE, soft), or undefined where /proc is not Linux's.
 * Node raises the soft limit to the hard one at start, so this is what sockets can really use.
 */
export function openFilesLimit(procLimits = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(procLimits, 'utf8');
  } catch {
    return undefined;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  if (soft === undefined) return undefined;
  return soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft);
}
