import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import {
  type GatewayHeartbeat,
  gatewayHeartbeatSubject,
  HEARTBEAT_MISSES,
  PRESENCE_STATE_BUCKET,
  PROCESSOR_CHECKPOINTS_BUCKET,
  type PresenceEvent,
  type PresenceState,
  presenceStateKey,
  presenceSubject,
} from '../../contract/index.js';
import { ensureStreams } from '../../gateway/streams.js';
import { isPermanentPublishError } from '../../processors/errors.js';
import {
  PRESENCE_CHECKPOINT_KEY,
  PresenceOwner,
  type PresenceOwnerOptions,
} from '../../processors/presence/presence-owner.js';
import type { DeviceStatusRow } from '../../processors/presence/presence-tracker.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

const HEARTBEAT_MS = 100;
const log = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent');

let nats: NatsServer;
let nc: NatsConnection;
let checkpoints: KV;
const beating = new Set<() => void>();

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Heartbeats of one gateway every HEARTBEAT_MS until the returned function is called. */
function beat(gateway: string, conn = nc): () => void {
  const send = () => {
    const hb: GatewayHeartbeat = {
      gateway,
      at: new Date().toISOString(),
      intervalMs: HEARTBEAT_MS,
      connections: 0,
    };
    conn.publish(gatewayHeartbeatSubject(gateway), JSON.stringify(hb));
  };
  send();
  const timer = setInterval(send, HEARTBEAT_MS);
  const stop = () => {
    clearInterval(timer);
    beating.delete(stop);
  };
  beating.add(stop);
  return stop;
}

/** Publishes one event to PRESENCE, as the gateway does; returns its stream sequence. */
async function publish(
  type: PresenceEvent['type'],
  deviceId: string,
  over: Partial<PresenceEvent> = {},
  conn = nc,
): Promise<number> {
  const event: PresenceEvent = {
    tenant: 'acme',
    deviceId,
    clientId: deviceId,
    gateway: 'gw-1',
    type,
    at: new Date().toISOString(),
    ...over,
  };
  return (await jetstream(conn).publish(presenceSubject('acme', deviceId), JSON.stringify(event))).seq;
}

async function stateOf(deviceId: string, conn = nc): Promise<PresenceState | undefined> {
  const kv = await new Kvm(conn).open(PRESENCE_STATE_BUCKET);
  const entry = await kv.get(presenceStateKey('acme', deviceId));
  return entry?.operation === 'PUT' ? entry.json<PresenceState>() : undefined;
}

async function savedCheckpoint(): Promise<number | undefined> {
  const entry = await checkpoints.get(PRESENCE_CHECKPOINT_KEY);
  return entry?.operation === 'PUT' ? entry.json<{ seq: number }>().seq : undefined;
}

function start(rows: DeviceStatusRow[], over: Partial<PresenceOwnerOptions> = {}) {
  return PresenceOwner.start({
    nc,
    checkpoints,
    replicas: 1,
    defaultHeartbeatIntervalMs: HEARTBEAT_MS,
    tickIntervalMs: 50,
    write: async (batch) => {
      rows.push(...batch);
    },
    log,
    ...over,
  });
}

const flips = (rows: DeviceStatusRow[]) => rows.map((r) => `${r.deviceId}:${r.online}:${r.reason}`);

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  checkpoints = await new Kvm(nc).create(PROCESSOR_CHECKPOINTS_BUCKET, { history: 1 });
});

afterAll(async () => {
  for (const stop of [...beating]) stop();
  await nc?.close();
  await nats?.dispose();
});

describe('PresenceOwner', () => {
  it('waits for PRESENCE, then turns its events into status rows and KV states, and checkpoints', async () => {
    beat('gw-1');
    const rows: DeviceStatusRow[] = [];
    const owner = await start(rows); // before the gateway has created the stream
    await ensureStreams(
      await jetstreamManager(nc),
      { telemetryMaxAgeMs: 3_600_000, dedupWindowMs: 60_000, replicas: 1 },
      log,
    );
    await publish('connected', 'd1');
    await publish('status', 'd1', { status: { fw: '1.4.2' } });
    await jetstream(nc).publish(presenceSubject('acme', 'bad'), 'not json'); // skipped, not fatal
    await publish('connected', 'd2');
    const last = await publish('disconnected', 'd1');

    await until(() => rows.length >= 3, 'three status rows');
    expect(flips(rows)).toEqual(['d1:true:connected', 'd2:true:connected', 'd1:false:disconnected']);
    await until(async () => (await stateOf('d1'))?.online === false, 'the state of d1 in KV');
    expect(await stateOf('d1')).toMatchObject({
      online: false,
      reason: 'disconnected',
      connections: [],
      status: { fw: '1.4.2' },
      seq: last,
    });
    expect(await stateOf('d2')).toMatchObject({
      online: true,
      connections: [{ gateway: 'gw-1', clientId: 'd2' }],
    });
    expect(await stateOf('bad')).toBeUndefined();
    await owner.stop();
    expect(owner.checkpointSeq).toBe(last);
    expect(await savedCheckpoint()).toBe(last);
  });

  it('resumes after its checkpoint, and retries a write that failed before checkpointing past it', async () => {
    const rows: DeviceStatusRow[] = [];
    let calls = 0;
    const owner = await start(rows, {
      write: async (batch) => {
        if (++calls === 1) throw new Error('TSDB unavailable');
        rows.push(...batch);
      },
    });
    const seq = await publish('disconnected', 'd2');
    await until(() => rows.length >= 1, 'the row of the new event');
    await until(() => owner.checkpointSeq === seq, 'the checkpoint');
    expect(calls).toBe(2);
    expect(flips(rows)).toEqual(['d2:false:disconnected']); // nothing from before the checkpoint
    await owner.stop();
  });

  it('replays after a crash without flipping a device again', async () => {
    const crashing = await natsClient(nats.url);
    const rows: DeviceStatusRow[] = [];
    // A clock that stands still: after its first checkpoint the owner saves no other (at most one per second).
    const frozen = Date.now();
    const owner = await start(rows, {
      nc: crashing,
      checkpoints: await new Kvm(crashing).open(PROCESSOR_CHECKPOINTS_BUCKET),
      clock: () => frozen,
    });
    const first = await publish('status', 'd9', { status: 'hello' });
    await until(async () => (await savedCheckpoint()) === first, 'the first checkpoint');
    await publish('connected', 'd3');
    const last = await publish('disconnected', 'd3');
    await until(async () => (await stateOf('d3'))?.seq === last, 'the state of d3 in KV');
    expect(flips(rows)).toEqual(['d3:true:connected', 'd3:false:disconnected']);

    await crashing.close(); // the owner's process dies: nothing more reaches NATS
    await owner.stop(); // only to end its timers: it cannot save anything any more
    expect(await savedCheckpoint()).toBe(first);

    const replayed: DeviceStatusRow[] = [];
    const next = await start(replayed);
    await until(() => next.checkpointSeq === last, 'the replay to be checkpointed');
    expect(replayed).toEqual([]);
    expect(await stateOf('d3')).toMatchObject({ online: false, reason: 'disconnected' });
    await next.stop();
  });

  it("takes the devices of a gateway whose heartbeats stop offline, and leaves other gateways' alone", async () => {
    const stopX = beat('gw-x');
    beat('gw-y');
    const rows: DeviceStatusRow[] = [];
    const owner = await start(rows);
    await publish('connected', 'dx', { gateway: 'gw-x' });
    await publish('connected', 'dy', { gateway: 'gw-y' });
    await until(() => rows.length >= 2, 'both devices online');

    stopX();
    const silentFrom = Date.now();
    await until(() => rows.length >= 3, 'the timeout of gw-x');
    const elapsed = Date.now() - silentFrom;
    expect(elapsed).toBeGreaterThanOrEqual((HEARTBEAT_MISSES - 1) * HEARTBEAT_MS);
    expect(flips(rows)).toEqual(['dx:true:connected', 'dy:true:connected', 'dx:false:gateway_lost']);
    await until(async () => (await stateOf('dx'))?.online === false, 'the state of dx in KV');
    expect(await stateOf('dx')).toMatchObject({ reason: 'gateway_lost', connections: [] });

    // gw-y keeps beating: its device stays online over several timeouts.
    await new Promise((r) => setTimeout(r, 2 * HEARTBEAT_MISSES * HEARTBEAT_MS));
    expect(rows).toHaveLength(3);
    expect((await stateOf('dy'))?.online).toBe(true);
    await owner.stop();
  });

  it('keeps presence moving for every device when one floods it with huge client ids', async () => {
    beat('gw-1');
    const rows: DeviceStatusRow[] = [];
    const limits: string[] = [];
    await ensureStreams(
      await jetstreamManager(nc),
      { telemetryMaxAgeMs: 3_600_000, dedupWindowMs: 60_000, replicas: 1 },
      log,
    );
    const owner = await start(rows, {
      onLimit: (limit: string, n = 1) => limits.push(...Array(n).fill(limit)),
    });
    // Found from outside: 25 connections whose client ids carried 50,000 characters each. Kept as
    // they came, the device's state was over NATS's max payload and every device waited behind it.
    const huge = (i: number) => `hog:${i}:${'x'.repeat(50_000)}`;
    for (let i = 0; i < 25; i++) await publish('connected', 'hog', { clientId: huge(i) });
    for (const d of ['o1', 'o2', 'o3']) await publish('connected', d);
    await until(() => rows.filter((r) => r.deviceId.startsWith('o')).length === 3, 'ordinary devices online');
    // A second wave, after the hog's batch: nothing may be waiting on it.
    for (const d of ['o1', 'o2', 'o3']) await publish('disconnected', d);
    const last = await publish('lost', 'hog', { clientId: huge(24) });
    await until(
      () => rows.filter((r) => r.deviceId.startsWith('o')).length === 6,
      'ordinary devices offline',
    );
    await until(() => owner.checkpointSeq === last, 'the checkpoint past the hostile events');
    expect(flips(rows).filter((f) => f.startsWith('o'))).toEqual([
      'o1:true:connected',
      'o2:true:connected',
      'o3:true:connected',
      'o1:false:disconnected',
      'o2:false:disconnected',
      'o3:false:disconnected',
    ]);
    const kept = await stateOf('hog');
    expect(kept?.online).toBe(true);
    expect(kept!.connections.length).toBeLessThanOrEqual(32);
    expect(JSON.stringify(kept).length).toBeLessThan(64 * 1024);
    expect(kept!.connections.every((c) => c.clientId.length <= 256)).toBe(true);
    expect(limits).toContain('PRESENCE_MAX_CLIENT_ID_BYTES');
    expect(owner.stalled()).toBeUndefined();
    await owner.stop();
  });
});

describe('PresenceOwner against a server with a small max_payload', () => {
  const MAX_PAYLOAD = 4_096;
  let small: NatsServer;
  let conn: NatsConnection;
  let smallCheckpoints: KV;

  beforeAll(async () => {
    small = await startNatsServer({ extraConfig: `max_payload: ${MAX_PAYLOAD}` });
    conn = await natsClient(small.url);
    smallCheckpoints = await new Kvm(conn).create(PROCESSOR_CHECKPOINTS_BUCKET, { history: 1 });
    await ensureStreams(
      await jetstreamManager(conn),
      { telemetryMaxAgeMs: 3_600_000, dedupWindowMs: 60_000, replicas: 1 },
      log,
    );
  });

  afterAll(async () => {
    // Heartbeats on this connection must stop before it closes, or the next one throws.
    for (const stop of [...beating]) stop();
    await conn?.close();
    await small?.dispose();
  });

  it('tells refusals that retrying cannot fix from those it can', async () => {
    const kv = await new Kvm(conn).create('tiny', { history: 1, maxValueSize: 100 });
    const refusal = (put: () => Promise<unknown>) =>
      put().then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(isPermanentPublishError(await refusal(() => kv.put('k', 'x'.repeat(200))))).toBe(true);
    expect(isPermanentPublishError(await refusal(() => kv.put('k', 'x'.repeat(MAX_PAYLOAD + 1))))).toBe(true);
    expect(isPermanentPublishError(new Error('TIMEOUT'))).toBe(false);
    await kv.put('k', 'fits');
  });

  it('skips, logs and counts a state NATS refuses, and every other device goes on', async () => {
    beat('gw-1', conn);
    const rows: DeviceStatusRow[] = [];
    let refused = 0;
    // Limits too generous for this server on purpose: the processor refuses to start with them.
    const owner = await start(rows, {
      nc: conn,
      checkpoints: smallCheckpoints,
      onRefused: (n) => {
        refused += n;
      },
    });
    await publish('status', 'fat', { status: 's'.repeat(3_000) }, conn);
    // Stored before it grows: the owner saves a device's latest state per batch, so on a slow
    // machine all of fat's events could share one batch whose only state is the refused one.
    await until(async () => (await stateOf('fat', conn)) !== undefined, "fat's first state");
    for (let i = 0; i < 10; i++)
      await publish('connected', 'fat', { clientId: `fat:${i}:${'c'.repeat(100)}` }, conn);
    await publish('connected', 'thin', {}, conn);
    await until(() => refused > 0, 'the refusal');
    const last = await publish('disconnected', 'thin', {}, conn);
    await until(() => owner.checkpointSeq === last, 'the checkpoint past the refused state');
    expect(flips(rows)).toEqual(['fat:true:connected', 'thin:true:connected', 'thin:false:disconnected']);
    expect(await stateOf('thin', conn)).toMatchObject({ online: false, seq: last });
    // The device keeps the last state NATS took.
    const fat = await stateOf('fat', conn);
    expect(Buffer.byteLength(JSON.stringify(fat))).toBeLessThan(MAX_PAYLOAD);
    expect(owner.stalled()).toBeUndefined();
    await owner.stop();
  });

  it('says it is stalled once a batch has waited ROLE_STALL_TIMEOUT, and recovers', async () => {
    let now = Date.now();
    let release: (() => void) | undefined;
    const rows: DeviceStatusRow[] = [];
    const owner = await start(rows, {
      nc: conn,
      checkpoints: smallCheckpoints,
      clock: () => now,
      stallTimeoutMs: 30_000,
      write: (batch) =>
        new Promise((resolve) => {
          release = () => {
            rows.push(...batch);
            resolve();
          };
        }),
    });
    await publish('connected', 'slow', {}, conn);
    await until(() => release !== undefined, 'the rows to be handed to the TSDB');
    now += 29_000;
    expect(owner.stalled()).toBeUndefined();
    now += 2_000;
    expect(owner.stalled()).toBe('status rows not written for 31 s');
    release!();
    await until(() => rows.length > 0 && owner.stalled() === undefined, 'the batch to be durable');
    await owner.stop();
  });
});
