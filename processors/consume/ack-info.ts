/**
 * What the partition consumer needs of each JetStream message, read from its reply subject:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<ts>.<pending>` (9 tokens), or
 * with `<domain>.<account hash>` after `ACK` and possibly a random token at the end (11 or 12).
 * nats.js' `msg.info` splits the subject into strings and parses every token into a new object for
 * each message: 6 % of a processor's CPU at a fleet's shape (bench:pipeline --profile-processor,
 * 2026-12-06). This scans for the dots and reads the three numbers in place, into an object the
 * caller reuses. Undefined for any other shape: the caller then asks nats.js, which says what is
 * wrong.
 */
export interface AckInfo {
  streamSequence: number;
  deliverySequence: number;
  pending: number;
}

/** Token positions of stream seq, delivery seq and pending, by token count. */
const OLD_FORM = [5, 6, 8] as const;
const NEW_FORM = [7, 8, 10] as const;
const MAX_TOKENS = 12;

const dots = new Int32Array(MAX_TOKENS);

/**
 * The message's reply subject: nats.js 3's JsMsg has it as `reply` without declaring it in its type;
 * should that change, this is undefined and the caller falls back to `msg.info`
 * (test/processors/ack-info.test.ts says so).
 */
export function replyOf(msg: object): string | undefined {
  const reply = (msg as { reply?: unknown }).reply;
  return typeof reply === 'string' ? reply : undefined;
}

export function ackInfo(reply: string | undefined, into: AckInfo): AckInfo | undefined {
  if (reply === undefined || !reply.startsWith('$JS.ACK.')) return undefined;
  let n = 0;
  for (let at = reply.indexOf('.'); at !== -1; at = reply.indexOf('.', at + 1)) {
    if (n === MAX_TOKENS) return undefined;
    dots[n++] = at;
  }
  const tokens = n + 1;
  const form = tokens === 9 ? OLD_FORM : tokens === 11 || tokens === 12 ? NEW_FORM : undefined;
  if (form === undefined) return undefined;
  const stream = digits(reply, form[0], n);
  const delivery = digits(reply, form[1], n);
  const pending = digits(reply, form[2], n);
  if (stream < 0 || delivery < 0 || pending < 0) return undefined;
  into.streamSequence = stream;
  into.deliverySequence = delivery;
  into.pending = pending;
  return into;
}

/** Token `k` (0-based, never the first) of a subject with `n` dots, as a decimal number; -1 if not one. */
function digits(reply: string, k: number, n: number): number {
  const from = dots[k - 1]! + 1;
  const to = k < n ? dots[k]! : reply.length;
  if (to <= from || to - from > 16) return -1; // empty, or past what a double holds exactly
  let value = 0;
  for (let i = from; i < to; i++) {
    const c = reply.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    value = value * 10 + c;
  }
  return value <= Number.MAX_SAFE_INTEGER ? value : -1;
}
