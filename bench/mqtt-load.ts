import { connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { generate, parser } from 'mqtt-packet';

/**
 * An MQTT 3.1.1 QoS 1 load generator over raw TCP, in two modes:
 * - closed loop (`runRound`): each client keeps `inflight` PUBLISHes outstanding and sends the next one
 *   when a PUBACK frees a packet id; for saturation.
 * - open loop (`Fleet` + `runRateRound`): clients connected once and kept across rounds, as a fleet
 *   stays connected; each device publishes at a fixed rate whatever the answers, `inflight` bounding
 *   what it may have outstanding (a send that finds no free packet id is shed and counted). One
 *   interval ticks every device: the fleet's sends are evenly spaced, device i's k-th due at
 *   start + (k + i/N) / rate, so the generator costs one timer, not one per device.
 *
 * Nothing is encoded on the hot path: each client's PUBLISH is generated once per round by
 * mqtt-packet, and a send copies that template and patches two fixed-width fields in place, the
 * 2-byte packet id and the 10 ASCII digits of `seq` (every message must be a new reading, or the
 * gateway would deduplicate it), and in open loop the 13 digits of `ts` too (the send's wall clock,
 * strictly increasing per device, so each reading is a point of its own in the TSDB). Replacements for all the PUBACKs found in one socket read go out
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
/** Epoch milliseconds have 13 digits from 2001 to 2286. */
const TS_DIGITS = 13;
/** Open loop: how often the one interval wakes to send what has come due. */
const TICK_MS = 2;

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
  tsOffset: number;
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
  const tsKey = bytes.indexOf('"ts":', idOffset + 2, 'latin1');
  const tsOffset = tsKey + '"ts":'.length;
  if (
    bytes.readUInt16BE(idOffset) !== 1 ||
    seqKey < 0 ||
    bytes.toString('latin1', seqOffset, seqOffset + SEQ_DIGITS) !== SEQ_MARK ||
    tsKey < 0 ||
    !/^\d{13},$/.test(bytes.toString('latin1', tsOffset, tsOffset + TS_DIGITS + 1))
  ) {
    throw new Error('PUBLISH template layout not understood');
  }
  return { bytes, idOffset, seqOffset, tsOffset };
}

/** Writes `value` as `digits` ASCII digits at `offset`. */
function patchDigits(buf: Buffer, offset: number, value: number, digits: number): void {
  for (let i = offset + digits - 1; i >= offset; i--) {
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
  patchDigits(copy, t.seqOffset, SEQ_BASE + 123_456, SEQ_DIGITS);
  patchDigits(copy, t.tsOffset, ts + 1, TS_DIGITS);
  const p = parser({ protocolVersion: 4 });
  let seen: { messageId?: number; payload?: unknown } | undefined;
  p.on('packet', (packet) => {
    seen = packet as typeof seen;
  });
  p.parse(copy);
  const json = seen?.payload instanceof Buffer ? JSON.parse(seen.payload.toString('utf8')) : undefined;
  if (seen?.messageId !== 4242 || json?.seq !== SEQ_BASE + 123_456 || json?.ts !== ts + 1) {
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
  /** Closed loop: a PUBACK's packet id is sent again at once. */
  refill: boolean;
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
    refill: true,
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
  /** The last `ts` sent in open loop: the next is later, so no two readings share a TSDB point. */
  private lastTs = 0;
  closed = false;

  constructor(
    private readonly device: BenchDevice,
    private readonly template: Template,
    private readonly inflight: number,
    /** The round this client counts in; a fleet's clients move from round to round. */
    public state: RoundState,
    host: string,
    port: number,
  ) {
    this.sentAt = new Float64Array(inflight + 1);
    for (let id = inflight; id >= 1; id--) this.free.push(id);
    this.socket = netConnect({ host, port, noDelay: true });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err: NodeJS.ErrnoException) =>
      countError(this.state.errors, `socket ${err.code ?? err.message}`),
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
      patchDigits(out, at + this.template.seqOffset, SEQ_BASE + this.device.nextSeq++, SEQ_DIGITS);
      this.sentAt[id] = now;
    }
    this.inFlight += n;
    this.state.sent += n;
    this.socket.write(out);
  }

  /**
   * Open loop: one PUBLISH now, its `ts` the wall clock (or 1 ms after the previous one). Returns the
   * `ts` sent, or 0 when nothing was: the in-flight bound is reached, or the connection is gone.
   */
  sendOne(now: number, wallMs: number): number {
    if (this.closed) return 0;
    const id = this.free.pop();
    if (id === undefined) return 0;
    const t = this.template;
    const out = Buffer.allocUnsafe(t.bytes.length);
    t.bytes.copy(out);
    out[t.idOffset] = id >> 8;
    out[t.idOffset + 1] = id & 0xff;
    patchDigits(out, t.seqOffset, SEQ_BASE + this.device.nextSeq++, SEQ_DIGITS);
    const ts = Math.max(wallMs, this.lastTs + 1);
    this.lastTs = ts;
    patchDigits(out, t.tsOffset, ts, TS_DIGITS);
    this.sentAt[id] = now;
    this.inFlight++;
    this.state.sent++;
    this.socket.write(out);
    return ts;
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
    if (state.sending) {
      if (state.refill) this.fill(now);
    } else if (this.inFlight === 0) state.onIdle();
  }
}

export interface FleetOptions {
  host: string;
  port: number;
  devices: readonly BenchDevice[];
  /** Packet ids per client: in closed loop what it keeps outstanding, in open loop the bound. */
  inflight: number;
  payloadBytes: number;
  topic: (deviceId: string) => string;
  connectTimeoutMs: number;
  /**
   * CONNECTs outstanding at once (default: all). The gateway checks secrets a few at a time and queues
   * at most AUTH_VERIFY_QUEUE (256) CONNECTs, and a socket opened long before its CONNECT is sent meets
   * the server's connect timeout: a large fleet connects a batch at a time.
   */
  connectConcurrency?: number;
}

export interface OpenLoopOptions {
  seconds: number;
  /** Publishes a second each device offers. */
  perDeviceHz: number;
  drainTimeoutMs: number;
  onStart?: () => void;
  onEnd?: () => void;
}

/** A round of a fleet that stays connected: no connect time of its own. */
export type FleetRoundResult = Omit<RoundResult, 'connectMs'>;

export interface OpenLoopResult extends FleetRoundResult {
  /** Sends that came due inside the window: devices × rate × seconds. */
  offered: number;
  /** Sends that found every packet id of their device in flight, so were not made. */
  shed: number;
  /** Latest a send went out after it came due: the generator's own lag (event loop busy). */
  lagMaxMs: number;
  /** `ts` of the round's first and last readings (epoch ms): the round's points in the TSDB. */
  firstTsMs: number;
  lastTsMs: number;
}

/** Clients connected once and kept across rounds; only those whose CONNECT was accepted take part. */
export class Fleet {
  private constructor(
    private readonly live: LoadClient[],
    /** Time to connect them all. */
    readonly connectMs: number,
    /** Connects that failed, by reason. */
    readonly connectErrors: Map<string, number>,
    readonly payloadBytes: number,
  ) {}

  get size(): number {
    return this.live.length;
  }

  /** Clients whose connection has closed since (by the server, or an error). */
  get lost(): number {
    return this.live.reduce((n, c) => n + (c.closed ? 1 : 0), 0);
  }

  static async connect(o: FleetOptions): Promise<Fleet> {
    const idle = newRoundState(() => {});
    // `ts` as of now: the closed loop sends it as it is, the open loop patches it per send.
    const payload = telemetryPayload(Date.now(), o.payloadBytes);
    const clients: LoadClient[] = [];
    const accepted: boolean[] = [];
    let firstError: Error | undefined;
    let next = 0;
    const connectOne = async (): Promise<void> => {
      while (next < o.devices.length) {
        const i = next++;
        const d = o.devices[i]!;
        const c = new LoadClient(
          d,
          publishTemplate(o.topic(d.id), payload),
          o.inflight,
          idle,
          o.host,
          o.port,
        );
        clients[i] = c;
        try {
          await c.connect(o.connectTimeoutMs);
          accepted[i] = true;
        } catch (err) {
          firstError ??= err as Error;
          countError(idle.errors, `connect: ${(err as Error).message.replace(/^[^:]+: /, '')}`);
          c.destroy();
        }
      }
    };
    const started = performance.now();
    const workers = Math.min(o.connectConcurrency ?? o.devices.length, o.devices.length);
    await Promise.all(Array.from({ length: workers }, connectOne));
    const connectMs = performance.now() - started;
    const live = clients.filter((_, i) => accepted[i]);
    if (live.length === 0) throw new Error(`no client connected: ${firstError?.message}`);
    return new Fleet(live, connectMs, idle.errors, Buffer.byteLength(payload));
  }

  /**
   * Closed loop: every client keeps all its packet ids in flight for `seconds`. Drains as in the open
   * loop.
   */
  async runClosedLoop(o: Omit<OpenLoopOptions, 'perDeviceHz'>): Promise<FleetRoundResult> {
    const state = this.begin(true);
    o.onStart?.();
    state.sending = true;
    state.windowOpen = true;
    const start = performance.now();
    for (const c of this.live) c.fill(start);
    await new Promise((resolve) => setTimeout(resolve, o.seconds * 1000));
    return this.end(state, start, o);
  }

  /**
   * Open loop: the fleet's sends evenly spaced over each period, device i's k-th due at
   * start + (k + i/N) / rate, whatever came back; one interval sends what has come due.
   */
  async runOpenLoop(o: OpenLoopOptions): Promise<OpenLoopResult> {
    const state = this.begin(false);
    const live = this.live;
    const gapMs = 1000 / (o.perDeviceHz * live.length);
    let offered = 0;
    let shed = 0;
    let lagMaxMs = 0;
    let firstTsMs = 0;
    let lastTsMs = 0;
    o.onStart?.();
    state.sending = true;
    state.windowOpen = true;
    const start = performance.now();
    const endAt = start + o.seconds * 1000;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        const wall = Date.now();
        for (;;) {
          const due = start + offered * gapMs;
          if (due > now || due >= endAt) break;
          if (now - due > lagMaxMs) lagMaxMs = now - due;
          const c = live[offered % live.length]!;
          offered++;
          const ts = c.sendOne(now, wall);
          if (ts === 0) {
            if (!c.closed) shed++;
            continue;
          }
          // A device's `ts` is never below the wall clock of its send: the first is the smallest.
          if (firstTsMs === 0) firstTsMs = ts;
          if (ts > lastTsMs) lastTsMs = ts;
        }
        if (now >= endAt) {
          clearInterval(timer);
          resolve();
        }
      }, TICK_MS);
    });
    return { ...(await this.end(state, start, o)), offered, shed, lagMaxMs, firstTsMs, lastTsMs };
  }

  /** DISCONNECT every client and wait for the closes. */
  async leave(): Promise<void> {
    await Promise.all(this.live.map((c) => c.leave(2_000)));
  }

  destroy(): void {
    for (const c of this.live) if (!c.closed) c.destroy();
  }

  /** A new round's state for every client. */
  private begin(refill: boolean): RoundState {
    const state = newRoundState(() => {});
    state.refill = refill;
    for (const c of this.live) c.state = state;
    return state;
  }

  /** Closes the window, then waits up to drainTimeoutMs for the PUBACKs still outstanding. */
  private async end(
    state: RoundState,
    start: number,
    o: Omit<OpenLoopOptions, 'perDeviceHz'>,
  ): Promise<FleetRoundResult> {
    state.sending = false;
    state.windowOpen = false;
    const seconds = (performance.now() - start) / 1000;
    o.onEnd?.();
    const outstanding = () => this.live.reduce((n, c) => n + c.outstanding, 0);
    if (outstanding() > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.drainTimeoutMs);
        state.onIdle = () => {
          if (outstanding() > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
    }
    // A PUBACK later than this still frees its packet id, but counts in no round.
    return {
      ackedInWindow: state.ackedInWindow,
      ackedTotal: state.ackedTotal,
      sent: state.sent,
      seconds,
      latenciesMs: state.latencies.values(),
      unacked: state.sent - state.ackedTotal,
      disconnects: state.disconnects,
      errors: state.errors,
      payloadBytes: this.payloadBytes,
    };
  }
}

/** Closed loop, connecting anew for the round (templates per round keep `ts` in the accepted window). */
export async function runRound(o: RoundOptions): Promise<RoundResult> {
  const fleet = await Fleet.connect(o);
  try {
    const r = await fleet.runClosedLoop(o);
    await fleet.leave();
    for (const [what, n] of fleet.connectErrors) r.errors.set(what, (r.errors.get(what) ?? 0) + n);
    return { ...r, connectMs: fleet.connectMs };
  } finally {
    fleet.destroy();
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
