import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConnectDeadlines, type DeadlineSocket } from '../../gateway/limits/connect-deadline.js';
import { openFilesLimit } from '../../gateway/limits/open-files.js';

/** A socket with the addresses of a connection; `wrap` shares them, as a TLSSocket does its socket's. */
class FakeSocket extends EventEmitter implements DeadlineSocket {
  destroyed = false;
  constructor(
    readonly remotePort: number,
    readonly remoteAddress = '10.0.0.1',
    readonly localAddress = '127.0.0.1',
    readonly localPort = 1883,
  ) {
    super();
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
  }
  wrap(): DeadlineSocket {
    return new FakeSocket(this.remotePort, this.remoteAddress, this.localAddress, this.localPort);
  }
}

describe('ConnectDeadlines', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('closes a socket whose CONNECT has not come at the deadline, and says which listener', () => {
    const expired: string[] = [];
    const deadlines = new ConnectDeadlines(1_000, (l) => expired.push(l));
    const socket = new FakeSocket(40_000);
    deadlines.arm(socket, 'MQTTS_PORT');
    vi.advanceTimersByTime(999);
    expect(socket.destroyed).toBe(false);
    vi.advanceTimersByTime(1);
    expect(socket.destroyed).toBe(true);
    expect(expired).toEqual(['MQTTS_PORT']);
    expect(deadlines.size).toBe(0);
  });

  it('stops the clock when the CONNECT arrives, found through whatever wraps the socket', () => {
    const expired: string[] = [];
    const deadlines = new ConnectDeadlines(1_000, (l) => expired.push(l));
    const socket = new FakeSocket(40_001);
    deadlines.arm(socket, 'MQTTS_PORT');
    vi.advanceTimersByTime(900);
    expect(deadlines.met(socket.wrap())).toBe(true);
    vi.advanceTimersByTime(10_000);
    expect(socket.destroyed).toBe(false);
    expect(expired).toEqual([]);
    expect(deadlines.met(socket)).toBe(false); // once
  });

  it('keeps connections apart by their address pair', () => {
    const deadlines = new ConnectDeadlines(1_000, () => {});
    const a = new FakeSocket(40_002);
    const b = new FakeSocket(40_002, '10.0.0.2');
    const c = new FakeSocket(40_002, '10.0.0.1', '127.0.0.1', 8883);
    for (const s of [a, b, c]) deadlines.arm(s, 'x');
    deadlines.met(b);
    vi.advanceTimersByTime(1_000);
    expect([a.destroyed, b.destroyed, c.destroyed]).toEqual([true, false, true]);
  });

  it('forgets a socket that closed by itself, and does not count one already destroyed', () => {
    const expired: string[] = [];
    const deadlines = new ConnectDeadlines(1_000, (l) => expired.push(l));
    const gone = new FakeSocket(40_003);
    deadlines.arm(gone, 'x');
    gone.destroy();
    expect(deadlines.size).toBe(0);
    const silent = new FakeSocket(40_004);
    deadlines.arm(silent, 'x');
    silent.destroyed = true; // closed underneath without a 'close' of its own
    vi.advanceTimersByTime(1_000);
    expect(expired).toEqual([]);
  });

  it('ignores a socket already closed at accept (no address left)', () => {
    const deadlines = new ConnectDeadlines(1_000, () => {});
    deadlines.arm({ destroyed: true, destroy() {}, once: () => undefined }, 'x');
    expect(deadlines.size).toBe(0);
  });
});

describe('openFilesLimit', () => {
  it('reads the soft limit of this process, and undefined without /proc', () => {
    const limit = openFilesLimit();
    if (process.platform === 'linux') expect(limit).toBeGreaterThan(0);
    expect(openFilesLimit('/nonexistent/limits')).toBeUndefined();
  });
});
