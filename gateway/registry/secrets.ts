import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(scryptCb) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

/**
 * Device secrets are stored as `scrypt$N$r$p$salt$hash` (base64url). Parameters travel with the
 * hash, so they can be raised later without invalidating existing devices.
 * N=2^14, r=8: about 16 MiB and tens of ms per check; the gateway remembers successful checks, so
 * a reconnecting device costs a SHA-256, not an scrypt.
 */
const SCRYPT_N = 16_384;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
const SECRET_BYTES = 24;

export function generateSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(secret, salt, KEY_BYTES, {
    N: SCRYPT_N,
    r: SCRYPT_R,
    p: SCRYPT_P,
    maxmem: 64 << 20,
  });
  return ['scrypt', SCRYPT_N, SCRYPT_R, SCRYPT_P, salt.toString('base64url'), key.toString('base64url')].join(
    '$',
  );
}

export async function verifySecret(secret: string | Buffer, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64url');
  const expected = Buffer.from(parts[5]!, 'base64url');
  const key = await scrypt(secret, salt, expected.length, { N, r, p, maxmem: 64 << 20 });
  return timingSafeEqual(key, expected);
}

/**
 * Remembers which (device, secretHash, password) triples verified, as a keyed SHA-256 with a key
 * that lives only in this process: nothing here lets a reader recover a password.
 */
export class VerifiedSecrets {
  private readonly pepper = randomBytes(32);
  private readonly verified = new Map<string, string>();

  constructor(
    /** AUTH_VERIFIED_MAX_DEVICES: past it the oldest remembered device is forgotten (its next check is an scrypt). */
    private readonly maxEntries = 100_000,
    private readonly onEvicted?: () => void,
  ) {}

  private digest(deviceId: string, secretHash: string, password: Buffer): string {
    return createHash('sha256')
      .update(this.pepper)
      .update(deviceId)
      .update('\0')
      .update(secretHash)
      .update('\0')
      .update(password)
      .digest('base64');
  }

  /**
   * A remembered success costs a SHA-256; anything else runs scrypt through `slot` (a bounded queue,
   * which may refuse), and not at all once `wanted` says the client is gone.
   */
  async verify(
    deviceId: string,
    secretHash: string,
    password: Buffer,
    slot: <T>(task: () => Promise<T>) => Promise<T> = (task) => task(),
    wanted: () => boolean = () => true,
  ): Promise<boolean> {
    const digest = this.digest(deviceId, secretHash, password);
    const known = this.verified.get(deviceId);
    if (known !== undefined && timingSafeEqual(Buffer.from(known), Buffer.from(digest))) return true;
    if (!(await slot(async () => wanted() && (await verifySecret(password, secretHash))))) return false;
    if (!this.verified.has(deviceId) && this.verified.size >= this.maxEntries) {
      this.verified.delete(this.verified.keys().next().value!);
      this.onEvicted?.();
    }
    this.verified.set(deviceId, digest);
    return true;
  }

  forget(deviceId: string): void {
    this.verified.delete(deviceId);
  }
}
