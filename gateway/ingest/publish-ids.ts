import { createHash, randomBytes } from 'node:crypto';

/**
 * Names MQTT publishes, so that a retransmission gets the name of the publish it repeats and every
 * other publish a name of its own. Readings without `ts` and dead letters take their JetStream message
 * ids from these names, so JetStream drops exactly the repeats.
 *
 * A packet id does not name a publish: a client may use it again as soon as the publish was
 * acknowledged, and every new connection of mosquitto_pub, or of a paho client object made anew,
 * starts at 1. What tells a retransmission is the DUP flag [MQTT-3.3.1-1]: a client sending a
 * PUBLISH again, on the same connection or after reconnecting, sets it and keeps the packet id
 * [MQTT-4.4.0-1]. So:
 * - DUP 0: a new publish, always a new name;
 * - DUP 1, and this session's last publish with that packet id had the same topic and payload: that
 *   publish's name;
 * - DUP 1 otherwise (the original went to another gateway, or to this one before it restarted, or was
 *   forgotten): a new name. The publish may then be stored twice; it is never dropped for a
 *   duplicate of something else.
 *
 * Pure apart from the clock and a random prefix: what it remembers is bounded per session (the last
 * `perSession` publishes), in age (`ttlMs`, the JetStream duplicate window: an older original would
 * not be deduplicated anyway) and in all (`maxRemembered`, oldest sessions forgotten first).
 */
export interface PublishIdsOptions {
  ttlMs: number;
  perSession: number;
  maxRemembered: number;
  /** Called with the number of publishes forgotten before their time because of maxRemembered. */
  onEvicted?: (forgotten: number) => void;
  now?: () => number;
}

interface Remembered {
  name: string;
  digest: string;
  atMs: number;
}

interface SessionMemory {
  /** By packet id, oldest first. */
  publishes: Map<number, Remembered>;
  lastAtMs: number;
}

export type PublishName = { name: string; retransmission: 'recognised' | 'unknown' | undefined };

export class PublishIds {
  /** Different in every process, so that names never repeat across restarts or gateways. */
  private readonly prefix = randomBytes(6).toString('base64url');
  private counter = 0;
  /** By session key, least recently used first. */
  private readonly sessions = new Map<string, SessionMemory>();
  private remembered = 0;
  private readonly now: () => number;

  constructor(private readonly o: PublishIdsOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Publishes remembered now. */
  get size(): number {
    return this.remembered;
  }

  /** A name never given before (QoS 0 publishes, which nothing can retransmit). */
  fresh(): string {
    return `${this.prefix}${(this.counter++).toString(36)}`;
  }

  /**
   * The name of a QoS 1/2 publish of `session` (a key for the device's client id: packet ids are per
   * session). `retransmission` says whether a DUP publish was matched to the one it repeats.
   */
  name(session: string, packetId: number, dup: boolean, topic: string, payload: Uint8Array): PublishName {
    const now = this.now();
    const digest = createHash('sha1').update(topic).update('\0').update(payload).digest('base64');
    let memory = this.sessions.get(session);
    if (memory !== undefined) {
      // Least recently used first: touching a session moves it to the end.
      this.sessions.delete(session);
      this.sessions.set(session, memory);
      const earlier = memory.publishes.get(packetId);
      if (dup && earlier !== undefined && earlier.digest === digest && now - earlier.atMs <= this.o.ttlMs) {
        memory.lastAtMs = now;
        return { name: earlier.name, retransmission: 'recognised' };
      }
    } else {
      memory = { publishes: new Map(), lastAtMs: now };
      this.sessions.set(session, memory);
    }
    const name = this.fresh();
    if (memory.publishes.delete(packetId)) this.remembered--;
    memory.publishes.set(packetId, { name, digest, atMs: now });
    memory.lastAtMs = now;
    this.remembered++;
    if (memory.publishes.size > this.o.perSession) {
      // A session's oldest publish: long acknowledged, past any retransmission.
      const oldest = memory.publishes.keys().next().value as number;
      memory.publishes.delete(oldest);
      this.remembered--;
    }
    if (this.remembered > this.o.maxRemembered) this.evict();
    return { name, retransmission: dup ? 'unknown' : undefined };
  }

  /** Forgets sessions silent for longer than the TTL. */
  sweep(): void {
    const cutoff = this.now() - this.o.ttlMs;
    for (const [key, memory] of this.sessions) {
      if (memory.lastAtMs > cutoff) break; // least recently used first
      this.sessions.delete(key);
      this.remembered -= memory.publishes.size;
    }
  }

  /** Over maxRemembered: the least recently used sessions go first, whole. */
  private evict(): void {
    this.sweep();
    let forgotten = 0;
    for (const [key, memory] of this.sessions) {
      if (this.remembered <= this.o.maxRemembered) break;
      this.sessions.delete(key);
      this.remembered -= memory.publishes.size;
      forgotten += memory.publishes.size;
    }
    if (forgotten > 0) this.o.onEvicted?.(forgotten);
  }
}
