import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.js';
import { GatewayConfigSchema } from '../../gateway/config.js';
import { configProblems } from '../kit/config.js';

/** The connection-level settings: their defaults, and combinations refused at start. */
const problemsOf = (env: Record<string, string>) =>
  configProblems(() => loadConfig(GatewayConfigSchema, env));

describe('connection-level settings', () => {
  it('have the documented defaults', () => {
    expect(loadConfig(GatewayConfigSchema, {})).toMatchObject({
      CONNECT_TIMEOUT_MS: 30_000,
      MAX_CONNECTIONS: 10_000,
      HTTP_MAX_CONNECTIONS: 256,
      HTTP_REQUEST_TIMEOUT_MS: 10_000,
      MIN_KEEPALIVE_SECONDS: 5,
      MAX_KEEPALIVE_SECONDS: 1_200,
    });
  });

  it('keep the keepalive minimum at or below the maximum, unless there is no maximum', () => {
    expect(problemsOf({ MIN_KEEPALIVE_SECONDS: '60', MAX_KEEPALIVE_SECONDS: '30' })).toEqual([
      expect.stringMatching(/MIN_KEEPALIVE_SECONDS: must not exceed MAX_KEEPALIVE_SECONDS/),
    ]);
    expect(problemsOf({ MIN_KEEPALIVE_SECONDS: '60', MAX_KEEPALIVE_SECONDS: '0' })).toEqual([]);
    expect(problemsOf({ MAX_KEEPALIVE_SECONDS: '65536', MIN_KEEPALIVE_SECONDS: '0' })).toHaveLength(2);
  });

  it('keep room on the HTTP port beyond the live view for probes', () => {
    expect(problemsOf({ HTTP_MAX_CONNECTIONS: '32' })).toEqual([
      expect.stringMatching(/HTTP_MAX_CONNECTIONS: must leave 8 sockets beyond the live view's 32 streams/),
    ]);
    expect(problemsOf({ HTTP_MAX_CONNECTIONS: '40' })).toEqual([]);
    expect(problemsOf({ HTTP_MAX_CONNECTIONS: '4', LIVE_VIEW: 'false' })).toEqual([]);
  });

  it('refuse timeouts that are no bound at all, or too short to complete a handshake', () => {
    expect(
      problemsOf({ CONNECT_TIMEOUT_MS: '0', HTTP_REQUEST_TIMEOUT_MS: '50', MAX_CONNECTIONS: '0' }),
    ).toHaveLength(3);
  });
});
