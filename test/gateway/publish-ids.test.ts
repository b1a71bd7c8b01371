import { describe, expect, it } from 'vitest';
import { PublishIds } from '../../gateway/ingest/publish-ids.js';

const TTL_MS = 120_000;
const payload = Buffer.from('{"metrics":{"a":1}}');

function ids(over: { perSession?: number; maxRemembered?: number } = {}) {
  let now = 1_000_000;
  const evicted: number[] = [];
  const publishIds = new PublishIds({
    ttlMs: TTL_MS,
    perSession: over.perSession ?? 4,
    maxRemembered: over.maxRemembered ?? 100,
    onEvicted: (n) => evicted.push(n),
    now: () => now,
  });
  return { publishIds, evicted, advance: (ms: number) => (now += ms) };
}

describe('PublishIds', () => {
  it('gives every new publish (DUP 0) a name of its own, whatever its packet id and content', () => {
    const { publishIds } = ids();
    const names = new Set([1, 1, 1, 2].map((pid) => publishIds.name('s', pid, false, 't', payload).name));
    expect(names.size).toBe(4);
  });

  it('gives a DUP publish the name of the one it repeats: same session, packet id, topic and payload', () => {
    const { publishIds } = ids();
    const original = publishIds.name('s', 7, false, 't', payload);
    expect(publishIds.name('s', 7, true, 't', payload)).toEqual({
      name: original.name,
      retransmission: 'recognised',
    });
    // Another session, topic or payload is not a repeat of it.
    expect(publishIds.name('other', 7, true, 't', payload).name).not.toBe(original.name);
    expect(publishIds.name('s', 7, true, 'u', payload).name).not.toBe(original.name);
  });

  it('names a DUP publish it has no memory of anew, and says so', () => {
    const { publishIds } = ids();
    const named = publishIds.name('s', 3, true, 't', payload);
    expect(named.retransmission).toBe('unknown');
    expect(publishIds.name('s', 3, false, 't', payload).name).not.toBe(named.name);
  });

  it('matches only the latest use of a packet id', () => {
    const { publishIds } = ids();
    publishIds.name('s', 1, false, 't', payload);
    const second = publishIds.name('s', 1, false, 't', payload);
    expect(publishIds.name('s', 1, true, 't', payload).name).toBe(second.name);
  });

  it('forgets past the duplicate window, and a session’s publishes beyond its last perSession', () => {
    const { publishIds, advance } = ids({ perSession: 2 });
    const first = publishIds.name('s', 1, false, 't', payload);
    publishIds.name('s', 2, false, 't', payload);
    publishIds.name('s', 3, false, 't', payload);
    expect(publishIds.size).toBe(2);
    expect(publishIds.name('s', 1, true, 't', payload).name).not.toBe(first.name);
    const late = publishIds.name('x', 9, false, 't', payload);
    advance(TTL_MS + 1);
    expect(publishIds.name('x', 9, true, 't', payload).name).not.toBe(late.name);
    publishIds.sweep();
    advance(TTL_MS + 1);
    publishIds.sweep();
    expect(publishIds.size).toBe(0);
  });

  it('holds at most maxRemembered, forgetting the least recently active sessions first, and counts it', () => {
    const { publishIds, evicted } = ids({ perSession: 2, maxRemembered: 4 });
    const kept = publishIds.name('busy', 1, false, 't', payload);
    publishIds.name('quiet', 1, false, 't', payload);
    publishIds.name('quiet', 2, false, 't', payload);
    publishIds.name('busy', 2, false, 't', payload);
    publishIds.name('new', 1, false, 't', payload);
    expect(publishIds.size).toBeLessThanOrEqual(4);
    expect(evicted).toEqual([2]);
    expect(publishIds.name('busy', 1, true, 't', payload).name).toBe(kept.name);
  });

  it('never gives the same fresh name twice, nor the same across instances', () => {
    const a = new PublishIds({ ttlMs: 1, perSession: 1, maxRemembered: 1 });
    const b = new PublishIds({ ttlMs: 1, perSession: 1, maxRemembered: 1 });
    const names = new Set([a.fresh(), a.fresh(), b.fresh(), b.fresh()]);
    expect(names.size).toBe(4);
  });
});
