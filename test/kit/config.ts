import { ConfigError } from '../../common/config.js';

/** The problems a configuration check lists (none when `check` passes); other errors are thrown. */
export function configProblems(check: () => unknown): readonly string[] {
  try {
    check();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}
