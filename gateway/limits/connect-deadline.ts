/**
 * One deadline per accepted socket, from accept to its MQTT CONNECT, on every listener. aedes' own
 * connectTimeout starts only once it is handed a stream: after the TLS handshake, after the
 * WebSocket upgrade, neither of which has a deadline of its own (Node's TLS handshakeTimeout and
 * HTTP headersTimeout are reset by every byte, or do not close the socket). A socket that trickles
 * its handshake a byte at a time is held by this clock as firmly as one that sends nothing.
 */

/** What the deadline needs of a socket: net.Socket, tls.TLSSocket (same addresses as the socket it wraps). */
export interface DeadlineSocket {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly destroyed: boolean;
  destroy(): void;
  once(event: 'close', listener: () => void): unknown;
}

interface Pending {
  timer: NodeJS.Timeout;
  listener: string;
}

/**
 * Keyed by the connection's address pair, so that whatever wraps the accepted socket (a TLSSocket,
 * the HTTP request of a WebSocket) finds the same clock without reaching into Node's internals.
 */
function keyOf(socket: DeadlineSocket): string | undefined {
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  if (remoteAddress === undefined || remotePort === undefined) return undefined; // already closed
  return `${localAddress}|${localPort}|${remoteAddress}|${remotePort}`;
}

export class ConnectDeadlines {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly timeoutMs: number,
    /** The deadline passed and the socket was destroyed. */
    private readonly expired: (listener: string) => void,
  ) {}

  /** Sockets accepted and not yet past their CONNECT. */
  get size(): number {
    return this.pending.size;
  }

  /** Starts the clock of a socket its listener just accepted. */
  arm(socket: DeadlineSocket, listener: string): void {
    const key = keyOf(socket);
    if (key === undefined) return;
    const entry: Pending = {
      listener,
      timer: setTimeout(() => {
        this.pending.delete(key);
        if (socket.destroyed) return; // closed without a 'close' of its own reaching us (a wrapper's)
        socket.destroy();
        this.expired(listener);
      }, this.timeoutMs),
    };
    this.pending.set(key, entry);
    socket.once('close', () => {
      clearTimeout(entry.timer);
      if (this.pending.get(key) === entry) this.pending.delete(key);
    });
  }

  /** The connection's CONNECT arrived: its clock stops. False when it had none (already expired). */
  met(socket: DeadlineSocket): boolean {
    const key = keyOf(socket);
    const entry = key === undefined ? undefined : this.pending.get(key);
    if (key === undefined || entry === undefined) return false;
    clearTimeout(entry.timer);
    this.pending.delete(key);
    return true;
  }
}
