/**
 * Stable codes for what can stop a simulation or a verification. The CLI maps them to exit codes
 * (main.ts): a bad option is 2, an unreachable server 3, a difference found by `verify` is 1.
 */
export class SimConfigError extends Error {
  readonly code = 'SIM_CONFIG_INVALID';
  constructor(readonly problems: readonly string[]) {
    super(`invalid options:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'SimConfigError';
  }
}

export class LedgerInvalidError extends Error {
  readonly code = 'LEDGER_INVALID';
  constructor(
    readonly path: string,
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`ledger ${path} is not valid:\n${problems.map((p) => `  - ${p}`).join('\n')}`, options);
    this.name = 'LedgerInvalidError';
  }
}

/** Registry provisioning failed (NATS unreachable, bucket missing, record refused). */
export class ProvisionError extends Error {
  readonly code = 'PROVISION_FAILED';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ProvisionError';
  }
}

/** Not one device could connect: the gateway is down, or refuses every device. */
export class NoConnectionError extends Error {
  readonly code = 'NO_DEVICE_CONNECTED';
  constructor(
    readonly url: string,
    readonly lastError: string,
  ) {
    super(`no device could connect to ${url}: ${lastError}`);
    this.name = 'NoConnectionError';
  }
}

/** The TSDB did not answer, or answered something that is not what the reader expects. */
export class TsdbReadError extends Error {
  readonly code = 'TSDB_READ_FAILED';
  constructor(
    message: string,
    readonly url: string,
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'TsdbReadError';
  }
}

/** DEADLETTER could not be read from NATS. */
export class DeadLetterReadError extends Error {
  readonly code = 'DEADLETTER_READ_FAILED';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'DeadLetterReadError';
  }
}
