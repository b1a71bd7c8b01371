import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { ProcessorConfigSchema } from '../../processors/config.js';
import { checkServerLimits } from '../../processors/processor.js';
import { configProblems } from '../kit/config.js';

const load = (env: Record<string, string> = {}) => loadConfig(ProcessorConfigSchema, env);
const problemsOf = configProblems;
/** nats-server's default max_payload. */
const NATS_MAX_PAYLOAD = 1024 * 1024;

describe('processor limits in the configuration', () => {
  it('fit the NATS server with their defaults', () => {
    expect(problemsOf(() => checkServerLimits(load(), NATS_MAX_PAYLOAD))).toEqual([]);
  });

  it('stop the start when a presence state could outgrow the server’s max_payload', () => {
    const config = load({ PRESENCE_MAX_CONNECTIONS: '1000', PRESENCE_MAX_CLIENT_ID_BYTES: '1024' });
    expect(problemsOf(() => checkServerLimits(config, NATS_MAX_PAYLOAD))).toEqual([
      expect.stringMatching(/^PRESENCE_MAX_CONNECTIONS, .*over the NATS server's max_payload \(1048576\)$/),
    ]);
    // A server configured with a smaller max_payload fails the defaults too, every one named.
    expect(problemsOf(() => checkServerLimits(load(), 64 * 1024))).toEqual([
      expect.stringMatching(/^PRESENCE_MAX_CONNECTIONS, /),
      expect.stringMatching(/^CHECKPOINT_MAX_BYTES: /),
    ]);
  });

  it('stop the start when a checkpoint could outgrow the server’s max_payload', () => {
    const config = load({ CHECKPOINT_MAX_BYTES: String(NATS_MAX_PAYLOAD) });
    expect(problemsOf(() => checkServerLimits(config, NATS_MAX_PAYLOAD))).toEqual([
      expect.stringMatching(/^CHECKPOINT_MAX_BYTES: 1048576 is over what the NATS server takes/),
    ]);
  });

  it('refuse durations without a unit, every one named', () => {
    expect(problemsOf(() => load({ LEASE_TTL: '10', WINDOWS: '10,60s' }))).toEqual([
      'WINDOWS: add a unit: 10s (got "10,60s")',
      'LEASE_TTL: add a unit: 10s (got "10")',
    ]);
  });

  it('refuse a client id bound too small to hold the digest that replaces a longer id', () => {
    expect(problemsOf(() => load({ PRESENCE_MAX_CLIENT_ID_BYTES: '32' }))).toEqual([
      expect.stringMatching(/^PRESENCE_MAX_CLIENT_ID_BYTES: /),
    ]);
  });
});
