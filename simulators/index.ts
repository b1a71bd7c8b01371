/** What code (tests, benches) uses of the simulator; the CLI is main.ts. */
export type { RunInput, RunOptions, VerifyInput, VerifyOptions } from './config.js';
export { resolveRunOptions, resolveVerifyOptions } from './config.js';
export { type Ledger, readLedger } from './ledger.js';
export { type RunHooks, type RunResult, runSimulation } from './run.js';
export { compareLedger, formatReport, type VerifyReport } from './verify.js';
export { type VerifyResult, verifyLedger } from './verify-run.js';
