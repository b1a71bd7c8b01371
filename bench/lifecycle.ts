/**
 * Everything a bench starts (servers, processes, connections) is stopped on the way out, whatever
 * the way out is: the end of the run, an error, Ctrl-C, or, as a synchronous last resort, the
 * process exiting with something still held.
 */
interface Held {
  what: string;
  run: () => Promise<void>;
  /** Synchronous last resort for `process.on('exit')`: SIGKILL by pid, remove temp dirs. */
  lastResort: () => void;
}

const held: Held[] = [];
let interrupted = false;

/** Registers something to stop; the returned function stops it now (once) and forgets it. */
export function hold(what: string, run: () => Promise<void>, lastResort: () => void): () => Promise<void> {
  const h: Held = { what, run, lastResort };
  held.push(h);
  return async () => {
    const i = held.indexOf(h);
    if (i < 0) return;
    held.splice(i, 1);
    await h.run();
  };
}

/** Stops everything still held, newest first; a failure is reported and the rest still stopped. */
export async function cleanup(): Promise<void> {
  while (held.length > 0) {
    const { what, run } = held.pop()!;
    try {
      await run();
    } catch (err) {
      console.error(`cleanup (${what}) failed: ${(err as Error).message}`);
    }
  }
}

/** True once Ctrl-C was pressed: the run stops where it is and leaves the stopping to the handler. */
export function isInterrupted(): boolean {
  return interrupted;
}

/**
 * Installs the exit and SIGINT handlers; `stopping` names what Ctrl-C stops ("the gateway and the
 * servers"). On SIGINT everything held is stopped and the process exits with 130.
 */
export function stopOnExit(stopping: string): void {
  process.on('exit', () => {
    for (const h of held.splice(0)) h.lastResort();
  });
  // `on` with a guard, not `once`: Ctrl-C reaches this process several times (from the terminal, then
  // relayed by npm and tsx), and a second SIGINT without a handler would kill it halfway through the
  // cleanup, leaving children and temp dirs behind (as in scripts/start.ts).
  process.on('SIGINT', () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\ninterrupted: stopping ${stopping}`);
    void cleanup().finally(() => process.exit(130));
  });
}
