import type { PublishPacket } from 'aedes';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PublishBudgets } from '../../../gateway/broker/publish-budget.js';
import { PublishRateError } from '../../../gateway/errors.js';
import { count, fakeClient, limitCount, log, metrics } from './fixtures.js';

const packet = (payloadBytes = 10, qos: 0 | 1 = 1): PublishPacket =>
  ({
    cmd: 'publish',
    topic: 'devices/dev-1/telemetry',
    payload: Buffer.alloc(payloadBytes),
    qos,
    retain: false,
    dup: false,
    messageId: 1,
  }) as PublishPacket;

function setup(
  o: { msgsPerSec?: number; msgsBurst?: number; bytesPerSec?: number; bytesBurst?: number } = {},
) {
  const m = metrics();
  const budgets = new PublishBudgets({
    msgsPerSec: o.msgsPerSec ?? 10,
    msgsBurst: o.msgsBurst ?? 2,
    bytesPerSec: o.bytesPerSec ?? 0,
    bytesBurst: o.bytesBurst ?? 0,
    metrics: m,
    log,
    now: () => Date.now(),
  });
  const client = fakeClient('dev-1');
  const outcome = { proceeded: 0, lost: [] as string[], done: [] as (Error | null | undefined)[] };
  const admit = (p = packet()) =>
    budgets.admit(
      client,
      'dev-1',
      p,
      (reason) => outcome.lost.push(reason),
      () => outcome.proceeded++,
      (err) => outcome.done.push(err),
    );
  return { m, budgets, client, outcome, admit };
}

describe('PublishBudgets', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets publishes within the burst go ahead at once', () => {
    const { admit, outcome } = setup();
    admit();
    admit();
    expect(outcome).toEqual({ proceeded: 2, lost: [], done: [] });
  });

  it('with no limits, lets everything through', () => {
    const { admit, outcome } = setup({ msgsPerSec: 0 });
    for (let i = 0; i < 1_000; i++) admit();
    expect(outcome.proceeded).toBe(1_000);
  });

  it('holds a publish over the rate until its token is there', async () => {
    const { admit, outcome, m } = setup();
    admit();
    admit();
    admit(); // one token in debt: 100 ms at 10/s
    expect(outcome.proceeded).toBe(2);
    vi.advanceTimersByTime(99);
    expect(outcome.proceeded).toBe(2);
    vi.advanceTimersByTime(1);
    expect(outcome.proceeded).toBe(3);
    expect(await count(m, 'gateway_publish_throttled_total', { action: 'delayed' })).toBe(1);
    expect(await limitCount(m, 'DEVICE_MAX_MSGS_PER_SEC')).toBe(1);
  });

  it('disconnects a device a whole burst in debt, its publish unanswered but refused', async () => {
    const { admit, outcome, m } = setup();
    for (let i = 0; i < 5; i++) admit(); // 2 saved + 2 of debt, then one more
    expect(outcome.lost).toEqual(['publish rate limit']);
    expect(outcome.done).toHaveLength(1);
    expect(outcome.done[0]).toBeInstanceOf(PublishRateError);
    expect(await count(m, 'gateway_publish_throttled_total', { action: 'disconnected' })).toBe(1);
  });

  it('leaves a QoS 1 publish unacknowledged when the connection closed while it waited', async () => {
    const { admit, outcome, client, m } = setup();
    admit();
    admit();
    admit();
    client.closed = true;
    vi.advanceTimersByTime(100);
    expect(outcome.proceeded).toBe(2);
    expect(outcome.done.map((e) => e?.message)).toEqual(['connection closed while throttled']);
    expect(await count(m, 'gateway_mqtt_publishes_total', { outcome: 'not_stored', qos: '1' })).toBe(1);
  });

  it('stores a QoS 0 publish that waited its turn even if the connection closed meanwhile', () => {
    const { admit, outcome, client } = setup();
    admit();
    admit();
    admit(packet(10, 0));
    client.closed = true;
    vi.advanceTimersByTime(100);
    expect(outcome.proceeded).toBe(3);
  });

  it('hands an exception of the delayed step to done', () => {
    const { budgets, client } = setup();
    const errors: (Error | null | undefined)[] = [];
    for (let i = 0; i < 3; i++)
      budgets.admit(
        client,
        'dev-1',
        packet(),
        () => {},
        () => {
          if (i === 2) throw new Error('bug');
        },
        (err) => errors.push(err),
      );
    vi.advanceTimersByTime(100);
    expect(errors.map((e) => e?.message)).toEqual(['bug']);
  });

  it("charges a will (a closed client's publish) without holding it, and drops it without budget", () => {
    const { admit, outcome, client } = setup();
    client.closed = true;
    admit();
    admit();
    expect(outcome.proceeded).toBe(2);
    admit();
    expect(outcome.proceeded).toBe(2);
    expect(outcome.lost).toEqual([]);
    expect(outcome.done[0]).toBeInstanceOf(PublishRateError);
  });

  it('charges payload and topic bytes against DEVICE_MAX_BYTES_PER_SEC', async () => {
    const { admit, outcome, m } = setup({ msgsPerSec: 0, bytesPerSec: 1_000, bytesBurst: 1_000 });
    admit(packet(900)); // 23 bytes of topic + 900
    expect(outcome.proceeded).toBe(1);
    admit(packet(900)); // 846 bytes in debt: 846 ms
    expect(outcome.proceeded).toBe(1);
    vi.advanceTimersByTime(846);
    expect(outcome.proceeded).toBe(2);
    expect(await limitCount(m, 'DEVICE_MAX_BYTES_PER_SEC')).toBe(1);
  });

  it('sweep keeps what is still in debt', () => {
    const { budgets, admit, outcome } = setup();
    admit();
    admit();
    budgets.sweep();
    admit();
    expect(outcome.proceeded).toBe(2); // still had to wait: the bucket was not forgotten
  });
});
