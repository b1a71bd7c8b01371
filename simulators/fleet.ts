import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { backoffMs } from '../common/backoff.js';
import { type PayloadEncoding, statusTopic, telemetryTopic } from '../contract/topics.js';
import type { DeviceScript, OutMessage } from './device-script.js';
import type { LedgerBook } from './ledger.js';
import type { RunStats } from './progress.js';
import { TimerWheel } from './timer-wheel.js';

/**
 * The fleet's I/O: one mqtt.js connection per device, one timer wheel pacing them all, and what
 * the gateway acknowledges going into the ledger. What each device sends is decided by its
 * DeviceScript; this module only sends it, keeps it until acknowledged, and sends it again after a
 * lost connection (same payload: the gateway deduplicates by seq + ts).
 */
export interface FleetSettings {
  url: string;
  /** Undefined with open auth: devices connect with their id as username and no password. */
  secret: string | undefined;
  qos: 0 | 1 | 2;
  inflight: number;
  connectConcurrency: number;
  drainTimeoutMs: number;
  runId: string;
}

/** Pacing resolution: 10 ms keeps 10k msg/s smooth (100 publishes per tick) at 100 wakeups a second. */
export const TICK_MS = 10;
/** A device stops buffering beyond this many publishes while it cannot send (oldest dropped). */
const MAX_QUEUED = 10_000;
const CONNECT_TIMEOUT_MS = 30_000;
/** CONNACK 4 right after provisioning: the gateway's registry watch may not have the device yet. */
const INITIAL_CONNECT_DEADLINE_MS = 30_000;
const RECONNECT_BACKOFF_MS: readonly [number, number] = [250, 5_000];
/** First connection attempts per device when the gateway does not answer at all. */
const NETWORK_ATTEMPTS = 3;
const KEEPALIVE_S = 60;
/** How long a churning device waits for its in-flight publishes before dropping the line anyway. */
const CHURN_DRAIN_MS = 1_000;
const CLOSE_TIMEOUT_MS = 5_000;
const CLOSE_CONCURRENCY = 200;

interface Pending {
  msg: OutMessage;
  sentOnce: boolean;
}

type DeviceState = 'new' | 'connecting' | 'up' | 'draining' | 'down' | 'closed';

class SimDevice {
  state: DeviceState = 'new';
  client: MqttClient | undefined;
  /** Bumped whenever a connection is given up: acks of an older connection are ignored. */
  gen = 0;
  readonly queue: Pending[] = [];
  /** Token (send order) → publish. */
  readonly inflight = new Map<number, Pending>();
  churn: { downtimeMs: number } | undefined;
  churnTimer: NodeJS.Timeout | undefined;
  reconnectTimer: NodeJS.Timeout | undefined;
  /** The next (re)connection follows a planned drop, not a lost connection. */
  plannedReconnect = false;
  lostReconnect = false;
  failures = 0;
  everConnected = false;
  /** Why the last connection attempt failed. */
  lastError: Error | undefined;

  /** The telemetry topic of each encoding. */
  readonly topics: Readonly<Record<PayloadEncoding, string>>;

  constructor(
    readonly id: string,
    readonly script: DeviceScript,
  ) {
    this.topics = { json: telemetryTopic(id), cbor: telemetryTopic(id, 'cbor') };
  }

  get idle(): boolean {
    return this.script.done && this.queue.length === 0 && this.inflight.size === 0;
  }
}

export class Fleet {
  private readonly devices: SimDevice[];
  private readonly wheel = new TimerWheel<SimDevice>(TICK_MS);
  private timer: NodeJS.Timeout | undefined;
  private startPerf = 0;
  private tokens = 0;
  private stopping = false;
  private closing = false;
  private lastAckPerf = 0;
  unackedReadings = 0;

  constructor(
    scripts: readonly DeviceScript[],
    private readonly settings: FleetSettings,
    private readonly ledger: LedgerBook,
    private readonly stats: RunStats,
  ) {
    this.devices = scripts.map((s) => new SimDevice(s.spec.id, s));
  }

  get size(): number {
    return this.devices.length;
  }

  inFlight(): number {
    let n = 0;
    for (const d of this.devices) n += d.inflight.size;
    return n;
  }

  queued(): number {
    let n = 0;
    for (const d of this.devices) n += d.queue.length;
    return n;
  }

  /** Milliseconds since sending started until the last acknowledgement. */
  get sendMs(): number {
    return this.startPerf === 0 ? 0 : Math.max(0, this.lastAckPerf - this.startPerf);
  }

  /** Connects every device, a few at a time; resolves with how many connected. */
  async connectAll(): Promise<number> {
    let next = 0;
    const worker = async () => {
      while (next < this.devices.length) {
        const d = this.devices[next++]!;
        await this.firstConnect(d);
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(this.settings.connectConcurrency, this.devices.length) }, worker),
    );
    return this.devices.filter((d) => d.everConnected).length;
  }

  /** Starts the schedule: publish p of a device is due at its dueOffsetMs after now. */
  start(): void {
    this.startPerf = performance.now();
    this.lastAckPerf = this.startPerf;
    for (const d of this.devices) {
      if (d.script.limit === 0) this.enqueue(d, d.script.step().messages);
      else this.wheel.schedule(d.script.dueOffsetMs(), d);
    }
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /** Resolves when every device has made its last publish and everything was acknowledged, or the drain timed out. */
  async finish(signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve) => {
      const check = () => {
        if (this.wheel.size === 0 || this.stopping) resolve();
        else setTimeout(check, 50);
      };
      if (signal?.aborted) this.stop();
      else signal?.addEventListener('abort', () => this.stop(), { once: true });
      check();
    });
    this.stop();
    const deadline = Date.now() + this.settings.drainTimeoutMs;
    while (Date.now() < deadline && !this.devices.every((d) => d.idle)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const d of this.devices) {
      const left = d.queue.length + d.inflight.size;
      if (left === 0) continue;
      this.ledger.unacked(d.id, left);
      for (const p of [...d.inflight.values(), ...d.queue]) this.unackedReadings += p.msg.readings.length;
    }
    await this.closeAll();
  }

  /** Stops sampling: every device flushes what it holds back; what is queued is still sent. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    for (const d of this.devices) {
      if (d.script.done) continue;
      this.enqueue(d, d.script.flush());
      this.markSilent(d);
      this.pump(d);
    }
  }

  private tick(): void {
    if (this.stopping) return;
    const now = performance.now() - this.startPerf;
    for (const d of this.wheel.due(now)) this.fire(d);
  }

  private fire(d: SimDevice): void {
    const step = d.script.step();
    this.enqueue(d, step.messages);
    if (step.done) this.markSilent(d);
    else this.wheel.schedule(d.script.dueOffsetMs(), d);
    if (step.churn !== undefined && d.churn === undefined && (d.state === 'up' || d.state === 'connecting')) {
      d.churn = step.churn;
    }
    this.pump(d);
  }

  private markSilent(d: SimDevice): void {
    if (d.script.silentFrom !== undefined && d.script.published >= d.script.silentFrom) {
      this.ledger.silentFrom(d.id, d.script.silentFromTs!);
    }
  }

  private enqueue(d: SimDevice, messages: readonly OutMessage[]): void {
    for (const msg of messages) d.queue.push({ msg, sentOnce: false });
    while (d.queue.length > MAX_QUEUED) {
      d.queue.shift();
      this.ledger.dropped++;
    }
  }

  private pump(d: SimDevice): void {
    if (d.state === 'up' && d.churn !== undefined) {
      this.beginChurn(d);
      return;
    }
    const client = d.client;
    if (d.state !== 'up' || client === undefined) return;
    while (d.queue.length > 0 && d.inflight.size < this.settings.inflight)
      this.send(d, client, d.queue.shift()!);
  }

  private send(d: SimDevice, client: MqttClient, p: Pending): void {
    const token = ++this.tokens;
    const gen = d.gen;
    const at = performance.now();
    d.inflight.set(token, p);
    if (p.sentOnce) this.ledger.retransmissions++;
    else {
      p.sentOnce = true;
      this.ledger.sent(d.id, p.msg);
      this.stats.sent++;
    }
    client.publish(d.topics[p.msg.encoding], p.msg.payload, { qos: this.settings.qos }, (err) =>
      this.onAck(d, gen, token, at, err),
    );
  }

  private onAck(d: SimDevice, gen: number, token: number, sentAt: number, err: Error | undefined): void {
    if (gen !== d.gen) return; // that connection was given up and its publishes queued again
    const p = d.inflight.get(token);
    if (p === undefined) return;
    if (err) {
      // The connection is going: its close handler queues the publish again.
      this.stats.error(`publish: ${err.message}`);
      return;
    }
    d.inflight.delete(token);
    const now = performance.now();
    this.lastAckPerf = now;
    this.stats.acked++;
    this.stats.ackLatency(Math.max(now - sentAt, 0.001));
    this.ledger.acked(d.id, p.msg);
    if (p.msg.duplicate) {
      d.queue.push({ msg: { ...p.msg, kind: 'duplicate', readings: [], duplicate: false }, sentOnce: false });
    }
    if (d.state === 'draining' && d.inflight.size === 0) this.dropForChurn(d);
    else this.pump(d);
  }

  private clientOptions(d: SimDevice): IClientOptions {
    return {
      clientId: d.id,
      username: d.id,
      ...(this.settings.secret === undefined ? {} : { password: this.settings.secret }),
      clean: true,
      protocolVersion: 4,
      keepalive: KEEPALIVE_S,
      // Reconnection is ours: mqtt.js would resend on its own schedule and hide what was lost.
      reconnectPeriod: 0,
      connectTimeout: CONNECT_TIMEOUT_MS,
      resubscribe: false,
      will: {
        topic: statusTopic(d.id),
        payload: Buffer.from(JSON.stringify({ online: false, reason: 'will', run: this.settings.runId })),
        qos: 1,
        retain: false,
      },
    };
  }

  /** One connection attempt; resolves true on CONNACK 0. */
  private connectOnce(d: SimDevice): Promise<boolean> {
    d.state = 'connecting';
    const gen = ++d.gen;
    const client = mqtt.connect(this.settings.url, this.clientOptions(d));
    d.client = client;
    // mqtt-packet corks each packet into one write; without this, Nagle holds small PUBLISHes back.
    (client.stream as Socket | undefined)?.setNoDelay?.(true);
    return new Promise((resolve) => {
      let settled = false;
      client.on('error', (err) => {
        if (!settled) {
          d.lastError = err;
          this.stats.error(`connect: ${err.message}`);
        } else this.stats.error(`connection: ${err.message}`);
      });
      client.once('connect', () => {
        settled = true;
        if (d.gen !== gen || this.closing) {
          // Given up on while connecting (the run is closing).
          client.end(true);
          resolve(false);
          return;
        }
        d.state = 'up';
        d.everConnected = true;
        d.failures = 0;
        this.stats.connected++;
        client.publish(
          statusTopic(d.id),
          JSON.stringify({ online: true, run: this.settings.runId }),
          { qos: 1 },
          () => {},
        );
        resolve(true);
        this.pump(d);
      });
      client.once('close', () => {
        if (!settled) {
          settled = true;
          client.end(true);
          if (d.gen === gen) d.state = 'down';
          resolve(false);
          return;
        }
        if (d.gen === gen) this.onLost(d);
      });
    });
  }

  private async firstConnect(d: SimDevice): Promise<void> {
    const deadline = Date.now() + INITIAL_CONNECT_DEADLINE_MS;
    let delay = RECONNECT_BACKOFF_MS[0];
    while (!(await this.connectOnce(d))) {
      d.failures++;
      // A CONNACK refusal (numeric code) may be the registry watch lagging; anything else (refused,
      // timed out) means the gateway is not there, and a few attempts tell as much as thirty.
      const refusedByBroker = typeof (d.lastError as { code?: unknown } | undefined)?.code === 'number';
      const giveUp = refusedByBroker ? Date.now() + delay > deadline : d.failures >= NETWORK_ATTEMPTS;
      if (giveUp || this.closing) {
        // Keep trying in the background while the run goes on; its samples wait in its queue.
        this.scheduleReconnect(d);
        return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, RECONNECT_BACKOFF_MS[1]);
    }
  }

  /** The connection closed without us asking: what was in flight is sent again on the next one. */
  private onLost(d: SimDevice): void {
    if (d.state === 'closed') return;
    if (d.state === 'up' || d.state === 'draining') this.stats.connected--;
    this.stats.lost++;
    this.giveUpConnection(d);
    d.lostReconnect = true;
    this.scheduleReconnect(d);
  }

  /** Ignores the connection's pending acks and puts its in-flight publishes back at the queue's head, in order. */
  private giveUpConnection(d: SimDevice): void {
    d.gen++;
    d.state = 'down';
    if (d.inflight.size > 0) {
      const back = [...d.inflight.entries()].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
      d.inflight.clear();
      d.queue.unshift(...back);
    }
    d.client?.removeAllListeners('close');
    d.client?.on('error', () => {});
    d.client?.end(true);
    d.client = undefined;
  }

  private scheduleReconnect(d: SimDevice, delayMs?: number): void {
    if (this.closing || d.reconnectTimer !== undefined) return;
    const backoff = backoffMs(d.failures, ...RECONNECT_BACKOFF_MS);
    d.reconnectTimer = setTimeout(() => {
      d.reconnectTimer = undefined;
      void this.reconnect(d);
    }, delayMs ?? backoff);
  }

  private async reconnect(d: SimDevice): Promise<void> {
    if (this.closing) return;
    if (await this.connectOnce(d)) {
      if (d.plannedReconnect) {
        this.ledger.reconnected(d.id, true);
        this.stats.reconnects++;
      }
      if (d.lostReconnect) this.ledger.reconnected(d.id, false);
      d.plannedReconnect = false;
      d.lostReconnect = false;
    } else {
      d.failures++;
      this.scheduleReconnect(d);
    }
  }

  /** Churn: stop sending, let what is in flight be acknowledged (briefly), then drop the line. */
  private beginChurn(d: SimDevice): void {
    d.state = 'draining';
    if (d.inflight.size === 0) {
      this.dropForChurn(d);
      return;
    }
    d.churnTimer = setTimeout(() => this.dropForChurn(d), CHURN_DRAIN_MS);
  }

  /** An unclean disconnect (no DISCONNECT packet), so the gateway publishes the device's will. */
  private dropForChurn(d: SimDevice): void {
    if (d.state !== 'draining') return;
    clearTimeout(d.churnTimer);
    d.churnTimer = undefined;
    const downtimeMs = d.churn?.downtimeMs ?? 0;
    d.churn = undefined;
    this.stats.connected--;
    this.giveUpConnection(d);
    d.plannedReconnect = true;
    this.scheduleReconnect(d, downtimeMs);
  }

  /** Gives up at once (nothing connected, or the caller failed): no drain, no more reconnects. */
  async close(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.closeAll();
  }

  /** Clean DISCONNECTs for every connected device; pending reconnects are cancelled. */
  private async closeAll(): Promise<void> {
    this.closing = true;
    const clients: MqttClient[] = [];
    for (const d of this.devices) {
      clearTimeout(d.reconnectTimer);
      clearTimeout(d.churnTimer);
      d.reconnectTimer = undefined;
      if (d.state === 'up' || d.state === 'draining') this.stats.connected--;
      d.state = 'closed';
      d.gen++;
      if (d.client) {
        d.client.removeAllListeners('close');
        d.client.on('error', () => {});
        clients.push(d.client);
      }
      d.client = undefined;
    }
    for (let i = 0; i < clients.length; i += CLOSE_CONCURRENCY) {
      await Promise.all(
        clients.slice(i, i + CLOSE_CONCURRENCY).map(
          (c) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                c.end(true);
                resolve();
              }, CLOSE_TIMEOUT_MS);
              c.end(false, {}, () => {
                clearTimeout(timer);
                resolve();
              });
            }),
        ),
      );
    }
  }
}
