import { parseCommand, USAGE } from './config.js';
import {
  DeadLetterReadError,
  LedgerInvalidError,
  NoConnectionError,
  ProvisionError,
  SimConfigError,
  TsdbReadError,
} from './errors.js';
import { runSimulation } from './run.js';
import { verifyLedger } from './verify-run.js';

/**
 * `npm run simulate -- [run options]` and `npm run simulate -- verify --ledger FILE`.
 * Exit codes: 0 done / exact, 1 differences found (verify) or the run failed, 2 bad options or
 * ledger, 3 a server (gateway, NATS, TSDB) could not be reached.
 */
const EXIT_DIFFERENT = 1;
const EXIT_USAGE = 2;
const EXIT_UNREACHABLE = 3;

async function main(argv: string[]): Promise<number> {
  const command = parseCommand(argv);
  if (command.command === 'help') {
    console.log(USAGE);
    return 0;
  }
  const log = (line: string) => console.error(line);
  const abort = new AbortController();
  let interrupted = 0;
  const onSignal = () => {
    interrupted++;
    if (interrupted > 1) process.exit(130);
    log('\nstopping: flushing and waiting for acknowledgements (again to quit at once)');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  if (command.command === 'verify') {
    const result = await verifyLedger(command.options, { log, signal: abort.signal });
    if (command.options.json)
      console.log(JSON.stringify({ exitCode: result.exitCode, tsdb: result.tsdb, ...result.report }));
    else console.log(result.text);
    return result.exitCode === 0 ? 0 : EXIT_DIFFERENT;
  }
  const result = await runSimulation(command.options, { signal: abort.signal, log });
  if (command.options.json) console.log(JSON.stringify(result.summary));
  else console.log(result.report);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof SimConfigError) {
      console.error(`simulate: ${err.message}\n\n(npm run simulate -- --help for the options)`);
      process.exit(EXIT_USAGE);
    }
    if (err instanceof LedgerInvalidError) {
      console.error(`simulate: ${err.message}`);
      process.exit(EXIT_USAGE);
    }
    if (
      err instanceof NoConnectionError ||
      err instanceof ProvisionError ||
      err instanceof TsdbReadError ||
      err instanceof DeadLetterReadError
    ) {
      console.error(`simulate: ${err.code}: ${err.message}`);
      process.exit(EXIT_UNREACHABLE);
    }
    console.error('simulate: failed:', err);
    process.exit(EXIT_DIFFERENT);
  },
);
