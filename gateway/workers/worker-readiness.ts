/** What the primary knows of one worker slot, for /readyz. */
export interface WorkerView {
  /** The slot, 1…GATEWAY_WORKERS; it keeps its number across restarts. */
  slot: number;
  /** The running worker's GATEWAY_ID, once it has said. */
  gateway: string | undefined;
  running: boolean;
  /** Not running: when the next one starts. */
  restartAtMs: number | undefined;
  /** The worker's last report: what keeps it from being ready, and when it said so. */
  status: { notReady: readonly string[]; atMs: number } | undefined;
}

/**
 * What keeps the cluster from being ready, worker by worker: it is ready only when every worker is,
 * since the MQTT ports hand each new connection to any of them. Empty when ready.
 */
export function workersNotReady(workers: readonly WorkerView[], nowMs: number, staleMs: number): string[] {
  const missing: string[] = [];
  for (const w of workers) {
    const name = w.gateway === undefined ? `worker ${w.slot}` : `worker ${w.slot} (${w.gateway})`;
    if (!w.running) {
      const inS =
        w.restartAtMs === undefined ? undefined : Math.max(0, Math.ceil((w.restartAtMs - nowMs) / 1000));
      missing.push(
        inS === undefined ? `${name}: not running` : `${name}: not running, restarted in ${inS} s`,
      );
    } else if (w.status === undefined) missing.push(`${name}: starting`);
    else if (nowMs - w.status.atMs > staleMs)
      missing.push(`${name}: no word for ${Math.round((nowMs - w.status.atMs) / 1000)} s`);
    else for (const m of w.status.notReady) missing.push(`${name}: ${m}`);
  }
  return missing;
}
