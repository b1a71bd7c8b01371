/**
 * Sleeps that a shutdown can cut short: a service waiting out a retry delay must not hold its
 * `stop()` for the rest of that delay.
 */
export class Naps {
  private readonly wakers = new Set<() => void>();

  /** Resolves after `ms`, or at once when `wakeAll()` is called meanwhile. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }
}
