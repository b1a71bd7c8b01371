import type { KV } from '@nats-io/kv';
import { LeaseLapsedError } from '../errors.js';

const WRITES = new Set<PropertyKey>(['put', 'create', 'update', 'delete', 'purge']);

/**
 * A KV bucket as the work behind one lease sees it: every write is refused (LeaseLapsedError) unless
 * `holds()` says the lease still runs. A partition consumer whose thread was stalled past its lease
 * cannot then save a checkpoint (and so acknowledge) over the one its new owner started from.
 */
export function fencedKv(kv: KV, lease: string, holds: () => boolean): KV {
  return new Proxy(kv, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (!WRITES.has(prop)) return value.bind(target);
      return (...args: unknown[]) =>
        holds() ? value.apply(target, args) : Promise.reject(new LeaseLapsedError(lease));
    },
  });
}
