import { defineConfig } from 'vitest/config';

/**
 * `npm run test:faults`: the fault drills (test/faults/), each a whole pipeline of real processes
 * broken on purpose. Kept out of `npm test` for their length. Two files at a time: each drill
 * spends most of its time waiting (outages, lease expiry, idle timeouts), not on the 2 cores.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
