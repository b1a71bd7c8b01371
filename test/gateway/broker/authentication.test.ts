import { beforeAll, describe, expect, it } from 'vitest';
import type { DeviceRecord } from '../../../contract/devices.js';
import { Authenticator, remoteAddressOf } from '../../../gateway/broker/authentication.js';
import { hashSecret, VerifiedSecrets } from '../../../gateway/registry/secrets.js';
import { count, limitCount, log, metrics } from './fixtures.js';

const SECRET = 'right-secret';
const now = new Date().toISOString();
let records: Map<string, DeviceRecord>;

beforeAll(async () => {
  const secretHash = await hashSecret(SECRET);
  const record = (id: string, disabled = false): DeviceRecord => ({
    id,
    tenant: 'acme',
    secretHash,
    labels: { site: 'a' },
    disabled,
    createdAt: now,
    updatedAt: now,
  });
  records = new Map([
    ['dev-1', record('dev-1')],
    ['dev-off', record('dev-off', true)],
    // A child registered through a gateway device: no secret.
    ['child-1', { ...record('child-1'), secretHash: '', labels: { via: 'site-1' } }],
    ['site-1', { ...record('site-1'), gateway: { children: 'any' } }],
  ]);
});

const config = {
  MAX_CLIENT_ID_BYTES: 32,
  AUTH_FAILURES_PER_MINUTE: 30,
  AUTH_VERIFY_CONCURRENCY: 2,
  AUTH_VERIFY_QUEUE: 16,
  DEVICE_MAX_CONNECTS_PER_MIN: 60,
};

/** The registry cache's lookup over a plain map: the unit under test only reads it. */
async function setup(overrides: Partial<typeof config> = {}, open = false) {
  const m = metrics();
  const auth = await Authenticator.create({
    config: { ...config, ...overrides },
    registry: open ? undefined : { get: (id: string) => records.get(id) },
    verified: new VerifiedSecrets(),
    metrics: m,
    log,
  });
  const connect = (
    clientId: string,
    username: string | undefined,
    password: string | undefined,
    remote = '10.0.0.1',
  ) =>
    auth.authenticate(
      { id: clientId, closed: false, conn: { remoteAddress: remote } as never, req: undefined as never },
      username,
      password === undefined ? undefined : Buffer.from(password),
    );
  return { auth, m, connect };
}

/** The CONNACK return code a refusal carries. */
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => 'accepted',
    (err: { returnCode: number }) => err.returnCode,
  );

describe('Authenticator', () => {
  it("accepts a device's own client ids with its secret, with its tenant and labels", async () => {
    const { connect, m } = await setup();
    expect(await connect('dev-1', 'dev-1', SECRET)).toMatchObject({
      deviceId: 'dev-1',
      tenant: 'acme',
      labels: { site: 'a' },
    });
    expect((await connect('dev-1:modem', 'dev-1', SECRET))?.deviceId).toBe('dev-1');
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'accepted' })).toBe(2);
  });

  it('refuses a wrong secret and an unknown device alike (4), and only then what the secret would reveal', async () => {
    const { connect, m } = await setup();
    expect(await refusal(connect('dev-1', 'dev-1', 'wrong'))).toBe(4);
    expect(await refusal(connect('dev-9', 'dev-9', SECRET))).toBe(4);
    expect(await refusal(connect('dev-1', 'dev-1', undefined))).toBe(4);
    expect(await refusal(connect('dev-off', 'dev-off', 'wrong'))).toBe(4);
    expect(await refusal(connect('dev-off', 'dev-off', SECRET))).toBe(5);
    expect(await refusal(connect('dev-2', 'dev-1', SECRET))).toBe(2);
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'bad_credentials' })).toBe(4);
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'client_id_rejected' })).toBe(1);
  });

  it('refuses a child registered through a gateway device as an unknown device (4), whatever it sends', async () => {
    const { connect } = await setup();
    expect(await refusal(connect('child-1', 'child-1', ''))).toBe(4);
    expect(await refusal(connect('child-1', 'child-1', SECRET))).toBe(4);
  });

  it("carries a gateway device's role in its identity", async () => {
    const { connect } = await setup();
    expect(await connect('site-1', 'site-1', SECRET)).toMatchObject({ gateway: { children: 'any' } });
    expect((await connect('dev-1', 'dev-1', SECRET))?.gateway).toBeUndefined();
  });

  it('refuses a client id past MAX_CLIENT_ID_BYTES before any secret is checked (2)', async () => {
    const { connect, m } = await setup();
    expect(await refusal(connect('dev-1:'.padEnd(33, 'x'), 'dev-1', SECRET))).toBe(2);
    expect(await limitCount(m, 'MAX_CLIENT_ID_BYTES')).toBe(1);
  });

  it('blocks a source past AUTH_FAILURES_PER_MINUTE, even with the right secret (3), not its neighbours', async () => {
    const { connect, m } = await setup({ AUTH_FAILURES_PER_MINUTE: 3 });
    for (let i = 0; i < 3; i++) expect(await refusal(connect('dev-1', 'dev-1', 'wrong'))).toBe(4);
    expect(await refusal(connect('dev-1', 'dev-1', SECRET))).toBe(3);
    expect(await refusal(connect('dev-1', 'dev-1', SECRET, '10.0.0.2'))).toBe('accepted');
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'rate_limited' })).toBe(1);
    expect(await limitCount(m, 'AUTH_FAILURES_PER_MINUTE')).toBe(1);
    expect(await m.registry.getSingleMetric('gateway_auth_blocked_sources')?.get()).toMatchObject({
      values: [{ value: 1 }],
    });
  });

  it('refuses past DEVICE_MAX_CONNECTS_PER_MIN with 3, only once the secret checked out', async () => {
    const { connect, m } = await setup({ DEVICE_MAX_CONNECTS_PER_MIN: 2 });
    expect(await refusal(connect('dev-1', 'dev-1', SECRET))).toBe('accepted');
    expect(await refusal(connect('dev-1', 'dev-1', 'wrong'))).toBe(4);
    expect(await refusal(connect('dev-1', 'dev-1', SECRET))).toBe('accepted');
    expect(await refusal(connect('dev-1', 'dev-1', SECRET))).toBe(3);
    expect(await limitCount(m, 'DEVICE_MAX_CONNECTS_PER_MIN')).toBe(1);
  });

  it('sheds secret checks past AUTH_VERIFY_QUEUE with 3 (server busy)', async () => {
    const { connect, m } = await setup({
      AUTH_VERIFY_CONCURRENCY: 1,
      AUTH_VERIFY_QUEUE: 1,
      AUTH_FAILURES_PER_MINUTE: 0,
    });
    const outcomes = await Promise.all(
      Array.from({ length: 4 }, () => refusal(connect('dev-9', 'dev-9', 'guess'))),
    );
    expect(outcomes.sort()).toEqual([3, 3, 4, 4]);
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'server_busy' })).toBe(2);
    expect(await limitCount(m, 'AUTH_VERIFY_QUEUE')).toBe(2);
  });

  it('checks an unknown device against the decoy hash, through the same bounded queue as a wrong secret', async () => {
    // One check at a time and none waiting: a CONNECT that needs a secret check while another runs is
    // shed. An unknown device is, so it costs (and takes) one scrypt like a known one.
    const { connect } = await setup({
      AUTH_VERIFY_CONCURRENCY: 1,
      AUTH_VERIFY_QUEUE: 0,
      AUTH_FAILURES_PER_MINUTE: 0,
    });
    const running = refusal(connect('dev-1', 'dev-1', 'guess'));
    expect(await refusal(connect('dev-9', 'dev-9', 'guess'))).toBe(3);
    expect(await running).toBe(4);
    expect(await refusal(connect('dev-9', 'dev-9', 'guess'))).toBe(4);
  });

  it('in open mode accepts anyone, bound to the username when it is a device id', async () => {
    const { connect, m } = await setup({}, true);
    expect((await connect('anything', 'dev-3', undefined))?.deviceId).toBe('dev-3');
    expect(await connect('anything', undefined, undefined)).toBeUndefined();
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'accepted_open' })).toBe(2);
  });
});

describe('remoteAddressOf', () => {
  it("is the socket's address, or for WebSocket the upgraded request's", () => {
    expect(remoteAddressOf({ conn: { remoteAddress: '10.1.1.1' } as never, req: undefined as never })).toBe(
      '10.1.1.1',
    );
    expect(
      remoteAddressOf({ conn: {} as never, req: { socket: { remoteAddress: '10.2.2.2' } } as never }),
    ).toBe('10.2.2.2');
  });
});

describe('Authenticator.authenticateRequest (HTTP ingest)', () => {
  const request = (
    auth: Authenticator,
    username: string | undefined,
    password: string | undefined,
    remote = '10.0.0.9',
  ) =>
    auth.authenticateRequest(
      username,
      password === undefined ? undefined : Buffer.from(password),
      remote,
      () => true,
    );
  const reason = (p: Promise<unknown>) =>
    p.then(
      () => 'accepted',
      (err: { reason?: string }) => err.reason,
    );

  it('accepts the right secret, with no client id rule and no connect rate', async () => {
    const { auth, m } = await setup({ DEVICE_MAX_CONNECTS_PER_MIN: 1 });
    for (let i = 0; i < 3; i++)
      expect(await request(auth, 'dev-1', SECRET)).toMatchObject({ deviceId: 'dev-1', tenant: 'acme' });
    expect(await count(m, 'gateway_mqtt_connects_total', { result: 'accepted' })).toBe(0);
  });

  it('refuses wrong secrets and unknown devices alike, a disabled device only with its secret', async () => {
    const { auth } = await setup();
    expect(await reason(request(auth, 'dev-1', 'wrong'))).toBe('bad_credentials');
    expect(await reason(request(auth, 'nobody', SECRET))).toBe('bad_credentials');
    expect(await reason(request(auth, undefined, undefined))).toBe('bad_credentials');
    expect(await reason(request(auth, 'dev-off', 'wrong'))).toBe('bad_credentials');
    expect(await reason(request(auth, 'dev-off', SECRET))).toBe('disabled');
  });

  it('counts failures per source with CONNECTs: a source past the limit is refused before any check', async () => {
    const { auth, connect, m } = await setup({ AUTH_FAILURES_PER_MINUTE: 3 });
    expect(await refusal(connect('dev-1', 'dev-1', 'wrong', '10.0.0.9'))).toBe(4);
    expect(await reason(request(auth, 'dev-1', 'wrong'))).toBe('bad_credentials');
    expect(await reason(request(auth, 'nobody', 'wrong'))).toBe('bad_credentials');
    expect(await reason(request(auth, 'dev-1', SECRET))).toBe('rate_limited');
    expect(await reason(request(auth, 'dev-1', SECRET, '10.0.0.10'))).toBe('accepted');
    expect(await limitCount(m, 'AUTH_FAILURES_PER_MINUTE')).toBeGreaterThan(0);
  });
});
