import type { LiveCursor, LiveFeed, LiveMessage } from './live-feed.js';

/**
 * The live view's Server-Sent Events clients: at most `maxClients`, each pushed the feed's delta since
 * what it was last sent. A client whose socket still holds more than `maxBufferedBytes` unsent is
 * skipped, not queued for: its cursor stays, so its next push is one delta covering everything it
 * missed. Memory per client is therefore one message at most, however slow it reads; one that stays
 * stalled for `stallTimeoutMs` is disconnected (EventSource reconnects and starts from a full message).
 */
export interface LiveSink {
  /** Bytes written and not yet handed to the socket (Node's `writable.writableLength`). */
  readonly writableLength: number;
  write(chunk: string): unknown;
  end(): void;
  destroy(): void;
}

export interface LiveHubOptions {
  feed: Pick<LiveFeed, 'delta'>;
  maxClients: number;
  maxBufferedBytes: number;
  stallTimeoutMs: number;
  /** Added to every message: what the page shows about the gateway itself. */
  status: () => Record<string, unknown>;
  clock?: () => number;
}

interface Client {
  cursor: LiveCursor | undefined;
  stalledSince: number | undefined;
}

/** One SSE `message` event; JSON never contains a raw newline, so one `data:` line suffices. */
const frame = (message: LiveMessage, status: Record<string, unknown>) =>
  `data: ${JSON.stringify({ ...message, status })}\n\n`;

export class LiveHub {
  private readonly clients = new Map<LiveSink, Client>();
  private readonly clock: () => number;

  constructor(private readonly o: LiveHubOptions) {
    this.clock = o.clock ?? Date.now;
  }

  get size(): number {
    return this.clients.size;
  }

  /** Registers a client and sends it a full message; false when the hub is full. */
  add(sink: LiveSink): boolean {
    if (this.clients.size >= this.o.maxClients) return false;
    const client: Client = { cursor: undefined, stalledSince: undefined };
    this.clients.set(sink, client);
    const first = this.o.feed.delta();
    if (first) {
      sink.write(frame(first.message, this.o.status()));
      client.cursor = first.cursor;
    }
    return true;
  }

  remove(sink: LiveSink): void {
    this.clients.delete(sink);
  }

  /** Sends each ready client what changed since its cursor. */
  push(): void {
    if (this.clients.size === 0) return;
    const now = this.clock();
    const status = this.o.status();
    // Clients that kept up share a cursor: one delta and one JSON text serve them all.
    const byCursor = new Map<string, { text: string; cursor: LiveCursor } | null>();
    for (const [sink, client] of this.clients) {
      if (sink.writableLength > this.o.maxBufferedBytes) {
        client.stalledSince ??= now;
        if (now - client.stalledSince >= this.o.stallTimeoutMs) {
          this.clients.delete(sink);
          sink.destroy();
        }
        continue;
      }
      client.stalledSince = undefined;
      const key = client.cursor === undefined ? 'full' : `${client.cursor.version}/${client.cursor.second}`;
      let out = byCursor.get(key);
      if (out === undefined) {
        const delta = this.o.feed.delta(client.cursor);
        out = delta ? { text: frame(delta.message, status), cursor: delta.cursor } : null;
        byCursor.set(key, out);
      }
      if (out === null) continue;
      sink.write(out.text);
      client.cursor = out.cursor;
    }
  }

  /** Ends every client's stream. */
  close(): void {
    for (const sink of this.clients.keys()) sink.end();
    this.clients.clear();
  }
}
