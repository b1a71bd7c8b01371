import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { startVictoriaMetrics, type Tsdb } from '../test/kit/victoria-metrics.js';
import { killQuietly } from './child-process.js';
import { hold } from './lifecycle.js';

/** A fresh VictoriaMetrics (the processors' TSDB in the benches): stopped, its data deleted, however the bench ends. */
export async function heldVictoriaMetrics(): Promise<{ tsdb: Tsdb; release: () => Promise<void> }> {
  const tsdb = await startVictoriaMetrics();
  const release = hold(
    'victoria-metrics',
    () => tsdb.dispose(),
    () => {
      killQuietly(tsdb.pid);
      rmSync(tsdb.dataDir, { recursive: true, force: true });
    },
  );
  return { tsdb, release };
}

export function victoriaMetricsVersion(): string {
  // The Debian build reports an empty app_version on /metrics; its package version is what there is.
  try {
    // `dpkg-query -W name` prints `name<TAB>version`.
    const line = execFileSync('dpkg-query', ['-W', 'victoria-metrics'], { encoding: 'utf8' });
    return line.split('\t')[1]?.trim() || 'unknown';
  } catch {
    return 'unknown';
  }
}
