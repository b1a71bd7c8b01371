import { describe, expect, it } from 'vitest';
import { generateSecret, hashSecret, VerifiedSecrets, verifySecret } from '../../gateway/registry/secrets.js';

describe('device secrets', () => {
  it('verifies the right secret only, and never stores it in the clear', async () => {
    const secret = generateSecret();
    const hash = await hashSecret(secret);
    expect(hash).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(hash).not.toContain(secret);
    expect(await verifySecret(secret, hash)).toBe(true);
    expect(await verifySecret(`${secret}x`, hash)).toBe(false);
    expect(await verifySecret(secret, 'md5$abc')).toBe(false);
  });

  it('generates distinct high-entropy secrets', () => {
    const secrets = new Set(Array.from({ length: 100 }, generateSecret));
    expect(secrets.size).toBe(100);
    for (const s of secrets) expect(s).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  it('remembers successful checks per device and hash, and forgets on request', async () => {
    const hash = await hashSecret('s3cret');
    const cache = new VerifiedSecrets();
    expect(await cache.verify('d1', hash, Buffer.from('s3cret'))).toBe(true);
    expect(await cache.verify('d1', hash, Buffer.from('s3cret'))).toBe(true);
    expect(await cache.verify('d1', hash, Buffer.from('wrong'))).toBe(false);
    const rotated = await hashSecret('new');
    expect(await cache.verify('d1', rotated, Buffer.from('s3cret'))).toBe(false);
    cache.forget('d1');
    expect(await cache.verify('d1', hash, Buffer.from('s3cret'))).toBe(true);
  });

  it('remembers at most maxEntries devices, the oldest forgotten first and counted', async () => {
    const hash = await hashSecret('s3cret');
    let evicted = 0;
    let checks = 0;
    const slot = <T>(task: () => Promise<T>) => {
      checks++;
      return task();
    };
    const cache = new VerifiedSecrets(2, () => evicted++);
    for (const id of ['d1', 'd2', 'd1', 'd3']) await cache.verify(id, hash, Buffer.from('s3cret'), slot);
    expect({ evicted, checks }).toEqual({ evicted: 1, checks: 3 });
    await cache.verify('d3', hash, Buffer.from('s3cret'), slot);
    expect(checks).toBe(3); // still remembered
    await cache.verify('d1', hash, Buffer.from('s3cret'), slot);
    expect(checks).toBe(4); // forgotten for d3: scrypt again
  });
});
