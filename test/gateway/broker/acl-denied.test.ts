import { describe, expect, it } from 'vitest';
import { aclDenied } from '../../../gateway/broker/acl-denied.js';
import { AclDeniedError } from '../../../gateway/errors.js';
import { count, log, metrics } from './fixtures.js';

describe('aclDenied', () => {
  it('counts the refusal by action and returns an ACL_DENIED error naming topic and client', async () => {
    const m = metrics();
    const err = aclDenied({ metrics: m, log }, { id: 'dev-1' }, 'subscribe', 'devices/dev-2/commands/#');
    expect(err).toBeInstanceOf(AclDeniedError);
    expect(err.code).toBe('ACL_DENIED');
    expect(await count(m, 'gateway_acl_denied_total', { action: 'subscribe' })).toBe(1);
    expect(await count(m, 'gateway_acl_denied_total', { action: 'publish' })).toBe(0);
  });
});
