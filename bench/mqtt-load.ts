import { connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { generate, parser } from 'mqtt-packet';

/**
 * A closed-loop MQTT 3.1.1 QoS 1 load generator over raw TCP: each client keeps `inflight`
 * PUBLISHes outstanding and sends the next one when a PUBACK frees a packet id.
 *
 * Nothing is encoded on the hot path: each client's PUBLISH is generated once per round by
 * mqtt-packet, and a send copies that template and patches two fixed-width fields in place, the
 * 2-byte packet id and the 10 ASCII digits of `seq` (every message must be a new reading, or the
 * gateway would deduplicate it). Replacements for all the PUBACKs found in one socket read go out
 * in one write, so the generator pays one syscall per read, not one per message.
 */

/** One simulated device; `nextSeq` survives rounds so no reading is ever sent twice. */
export interface BenchDevice {
  id: string;
  username: string | undefined;
  password: string | undefined;
  nextSeq: number;
}

export interface RoundOptions {
  host: string;
  port: number;
  devices: readonly BenchDevice[];
  inflight: number;
  seconds: number;
  /** Payload size to aim for; the natural payload (~102 bytes) is used when this is smaller. */
  payloadBytes: number;
  topic: (deviceId: string) => string;
  connectTimeoutMs: number;
  /** How long to wait for the PUBACKs still outstanding when the window closes. */
  drainTimeoutMs: number;
  /** Called when all clients are connected, just before the window opens (CPU sampling). */
  onStart?: () => void;
  /** Called when the window closes, before draining. */
  onEnd?: () => void;
}

export interface RoundResult {
  /** PUBACKs received inside the timed window: the throughput figure. */
  ackedInWindow: number;
  /** All PUBACKs of the round, window and drain. */
  ackedTotal: number;
  sent: number;
  seconds: number;
  /** publish → PUBACK latency of each PUBACK received inside the window, milliseconds. */
  latenciesMs: Float64Array;
  /** Publishes never acknowledged (client lost or drain timeout). */
  unacked: number;
  /** Clients whose connection closed or failed while the round was running. */
  disconnects: number;
  errors: Map<string, number>;
  connectMs: number;
  payloadBytes: number;
}

/** Fixed width so a send can patch the digits in place; 10 digits last 9e9 readings per device. */
export const SEQ_BASE = 1_000_000_000;
const SEQ_DIGITS = 10;
const SEQ_MARK = String(SEQ_BASE).padStart(SEQ_DIGITS, '0');

const PUBACK = 0x40;
const CONNACK = 0x20;
const PINGRESP = 0xd0;
const DISCONNECT = generate({ cmd: 'disconnect' });

/** The version 1 telemetry payload, grown with extra metrics when a larger size is asked for. */
export function telemetryPayload(ts: number, targetBytes: number): string {
  const base = `{"ts":${ts},"seq":${SEQ_MARK},"metrics":{"temperature":21.5,"humidity":40.2,"pressure":1013.2`;
  let body = base;
  // Each pad metric is `,"pN…":0`; the contract caps names at 64 characters and metrics at 256.
  for (let n = 0; body.length + 2 < targetBytes && n < 200; n++) {
    const room = targetBytes - 2 - body.length - 6; // `,"":0` plus at least one name character
    if (room < 1) break;
    const name = `p${n}`.padEnd(Math.min(64, Math.max(room, String(n).length + 1)), 'x');
    body += `,"${name}":0`;
  }
  return `${body}}}`;
}

interface Template {
  bytes: Buffer;
  idOffset: number;
  seqOffset: number;
}

function publishTemplate(topic: string, payload: string): Template {
  const bytes = generate({ cmd: 'publish', topic, payload, qos: 1, messageId: 1, retain: false, dup: false });
  // Fixed header: 1 type byte + 1–4 bytes of remaining length, then topic (2 + n bytes), packet id.
  let header = 1;
  while ((bytes[header]! & 0x80) !== 0) header++;
  header++;
  const idOffset = header + 2 + Buffer.byteLength(topic);
  const seqKey = bytes.indexOf('"seq":', idOffset + 2, 'latin1');
  const seqOffset = seqKey + '"seq":'.length;
  if (
    bytes.readUInt16BE(idOffset) !== 1 ||
    seqKey < 0 ||
    bytes.toString('latin1', seqOffset, seqOffset + SEQ_DIGITS) !== SEQ_MARK
  ) {
    throw new Error('PUBLISH template layout not understood');
  }
  return { bytes, idOffset, seqOffset };
}

/** Writes `value` as SEQ_DIGITS ASCII digits at `offset`. */
function patchDigits(buf: Buffer, offset: number, value: number): void {
  for (let i = offset + SEQ_DIGITS - 1; i >= offset; i--) {
    buf[i] = 48 + (value % 10);
    value = Math.floor(value / 10);
  }
}

/** Checks the patching against mqtt-packet's own parser once, before anything is timed. */
export function selfCheck(topic: string, payloadBytes: number): void {
  const ts = Date.now();
  const t = publishTemplate(topic, telemetryPayload(ts, payloadBytes));
  const copy = Buffer.from(t.bytes);
  copy.writeUInt16BE(4242, t.idOffset);
  patchDigits(copy, t.seqOffset, SEQ_BASE + 123_456);
  const p = parser({ protocolVersion: 4 });
  let seen: { messageId?: number; payload?: unknown } | undefined;
  p.on('packet', (packet) => {
    seen = packet as typeof seen;
  });
  p.parse(copy);
  const json = seen?.payload instanceof Buffer ? JSON.parse(seen.payload.toString('utf8')) : undefined;
  if (seen?.messageId !== 4242 || json?.seq !== SEQ_BASE + 123_456 || json?.ts !== ts) {
    throw new Error('patched PUBLISH does not parse back as written');
  }
}

class LatencyLog {
  private buf = new Float64Array(1 << 18);
  length = 0;
  add(ms: number): void {
    if (this.length === this.buf.length) {
      const bigger = new Float64Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.length++] = ms;
  }
  values(): Float64Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Shared by the clients of one round. */
interface RoundState {
  sending: boolean;
  windowOpen: boolean;
  latencies: LatencyLog;
  ackedInWindow: number;
  ackedTotal: number;
  sent: number;
  disconnects: number;
  errors: Map<string, number>;
  onIdle: () => void;
}

/** A round's state before any client connects: nothing sent, counted or open yet. */
function newRoundState(onIdle: () => void): RoundState {
  return {
    sending: false,
    windowOpen: false,
    latencies: new LatencyLog(),
    ackedInWindow: 0,
    ackedTotal: 0,
    sent: 0,
    disconnects: 0,
    errors: new Map(),
    onIdle,
  };
}

function countError(errors: Map<string, number>, what: string): void {
  errors.set(what, (errors.get(what) ?? 0) + 1);
}

class LoadClient {
  private readonly socket: Socket;
  private readonly sentAt: Float64Array;
  private readonly free: number[] = [];
  private pending = Buffer.alloc(0);
  private inFlight = 0;
  private connacked: ((rc: number) => void) | undefined;
  private leaving = false;
  closed = false;

  constructor(
    private readonly device: BenchDevice,
    private readonly template: Template,
    private readonly inflight: number,
    private readonly state: RoundState,
    host: string,
    port: number,
  ) {
    this.sentAt = new Float64Array(inflight + 1);
    for (let id = inflight; id >= 1; id--) this.free.push(id);
    this.socket = netConnect({ host, port, noDelay: true });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err: NodeJS.ErrnoException) =>
      countError(state.errors, `socket ${err.code ?? err.message}`),
    );
    this.socket.on('close', () => this.onClose());
  }

  get outstanding(): number {
    return this.inFlight;
  }

  /** Resolves with the CONNACK return code; rejects on timeout or a closed socket. */
  connect(timeoutMs: number): Promise<void> {
    const { id, username, password } = this.device;
    this.socket.write(
      generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: id,
        clean: true,
        // No keepalive: the bench never idles long, and PINGREQs would only add noise.
        keepalive: 0,
        ...(username === undefined ? {} : { username }),
        ...(password === undefined ? {} : { password: Buffer.from(password) }),
      }),
    );
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${id}: no CONNACK within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.connacked = (rc) => {
        clearTimeout(timer);
        this.connacked = undefined;
        if (rc === 0) resolve();
        else reject(new Error(`${id}: CONNACK return code ${rc}`));
      };
      this.socket.once('close', () => {
        clearTimeout(timer);
        if (this.connacked) reject(new Error(`${id}: connection closed before CONNACK`));
      });
    });
  }

  /** Sends every free packet id, in one write. */
  fill(now: number): void {
    const n = this.free.length;
    if (n === 0 || this.closed) return;
    const t = this.template.bytes;
    const len = t.length;
    const out = Buffer.allocUnsafe(n * len);
    for (let i = 0; i < n; i++) {
      const id = this.free.pop()!;
      const at = i * len;
      t.copy(out, at);
      out[at + this.template.idOffset] = id >> 8;
      out[at + this.template.idOffset + 1] = id & 0xff;
      patchDigits(out, at + this.template.seqOffset, SEQ_BASE + this.device.nextSeq++);
      this.sentAt[id] = now;
    }
    this.inFlight += n;
    this.state.sent += n;
    this.socket.write(out);
  }

  /** DISCONNECT, then wait for the socket to close (destroyed after timeoutMs). */
  leave(timeoutMs: number): Promise<void> {
    this.leaving = true;
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.socket.destroy(), timeoutMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.end(DISCONNECT);
    });
  }

  destroy(): void {
    this.leaving = true;
    this.socket.destroy();
  }

  private onClose(): void {
    this.closed = true;
    if (!this.leaving) {
      this.state.disconnects++;
      this.inFlight = 0; // what was in flight is counted as unacked by the round
      this.state.onIdle();
    }
  }

  private onData(chunk: Buffer): void {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const now = performance.now();
    const state = this.state;
    let off = 0;
    let acks = 0;
    while (off + 2 <= buf.length) {
      // Remaining length: 1–4 bytes, 7 bits each [MQTT-2.2.3].
      let remaining = 0;
      let shift = 0;
      let pos = off + 1;
      let complete = false;
      while (pos < buf.length && shift <= 21) {
        const b = buf[pos++]!;
        remaining |= (b & 0x7f) << shift;
        shift += 7;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || pos + remaining > buf.length) break;
      const type = buf[off]!;
      if (type === PUBACK && remaining === 2) {
        const id = (buf[pos]! << 8) | buf[pos + 1]!;
        const sentAt = id <= this.inflight ? this.sentAt[id]! : 0;
        if (sentAt === 0) {
          countError(state.errors, 'PUBACK for a packet id not in flight');
        } else {
          this.sentAt[id] = 0;
          this.inFlight--;
          state.ackedTotal++;
          acks++;
          if (state.windowOpen) {
            state.ackedInWindow++;
            state.latencies.add(now - sentAt);
          }
          this.free.push(id);
        }
      } else if (type === CONNACK && remaining === 2) {
        this.connacked?.(buf[pos + 1]!);
      } else if (type !== PINGRESP) {
        countError(state.errors, `unexpected packet type 0x${type.toString(16)}`);
      }
      off = pos + remaining;
    }
    this.pending = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off));
    if (acks === 0) return;
    if (state.sending) this.fill(now);
    else if (this.inFlight === 0) state.onIdle();
  }
}

export async function runRound(o: RoundOptions): Promise<RoundResult> {
  let wake: () => void = () => {};
  const state = newRoundState(() => wake());
  const errors = state.errors;
  // Templates are made per round so `ts` stays within the gateway's accepted window.
  const ts = Date.now();
  const payload = telemetryPayload(ts, o.payloadBytes);
  const clients = o.devices.map(
    (d) => new LoadClient(d, publishTemplate(o.topic(d.id), payload), o.inflight, state, o.host, o.port),
  );
  try {
    const connectStart = performance.now();
    const connects = await Promise.allSettled(clients.map((c) => c.connect(o.connectTimeoutMs)));
    const connectMs = performance.now() - connectStart;
    const failed = connects.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    for (const f of failed)
      countError(errors, `connect: ${(f.reason as Error).message.replace(/^[^:]+: /, '')}`);
    if (failed.length === clients.length)
      throw new Error(`no client connected: ${(failed[0]!.reason as Error).message}`);
    const live = clients.filter((_, i) => connects[i]!.status === 'fulfilled');

    o.onStart?.();
    state.sending = true;
    state.windowOpen = true;
    const start = performance.now();
    for (const c of live) c.fill(start);
    await new Promise((resolve) => setTimeout(resolve, o.seconds * 1000));
    state.sending = false;
    state.windowOpen = false;
    const seconds = (performance.now() - start) / 1000;
    o.onEnd?.();

    const outstanding = () => live.reduce((n, c) => n + c.outstanding, 0);
    if (outstanding() > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.drainTimeoutMs);
        wake = () => {
          if (outstanding() > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const unacked = state.sent - state.ackedTotal;
    await Promise.all(live.map((c) => c.leave(2_000)));
    return {
      ackedInWindow: state.ackedInWindow,
      ackedTotal: state.ackedTotal,
      sent: state.sent,
      seconds,
      latenciesMs: state.latencies.values(),
      unacked,
      disconnects: state.disconnects,
      errors,
      connectMs,
      payloadBytes: Buffer.byteLength(payload),
    };
  } finally {
    for (const c of clients) if (!c.closed) c.destroy();
  }
}

/** Connects one client and leaves at once: makes a server set up its per-account MQTT state. */
export async function touch(
  host: string,
  port: number,
  device: BenchDevice,
  timeoutMs: number,
): Promise<void> {
  const state = newRoundState(() => {});
  const client = new LoadClient(
    device,
    publishTemplate('bench/touch', telemetryPayload(Date.now(), 0)),
    1,
    state,
    host,
    port,
  );
  try {
    await client.connect(timeoutMs);
    await client.leave(2_000);
  } finally {
    client.destroy();
  }
}
