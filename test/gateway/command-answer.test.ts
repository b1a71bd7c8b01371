import { describe, expect, it } from 'vitest';
import { GatewayCommandOutcome } from '../../contract/commands.js';
import { commandAnswer, isComplete, partialAnswer } from '../../gateway/command-answer.js';
import { GatewayDirectory } from '../../gateway/gateway-directory.js';

const outcome = (gateway: string, o: Partial<GatewayCommandOutcome> = {}): GatewayCommandOutcome => ({
  gateway,
  delivered: 0,
  queued: 0,
  queueFull: 0,
  backlogged: 0,
  connected: 0,
  known: [gateway],
  ...o,
});
const both = new Set(['a', 'b']);

describe('commandAnswer', () => {
  it('answers delivered at once, from any gateway, whoever else is still to reply', () => {
    expect(commandAnswer([outcome('b', { delivered: 1, connected: 1 })], both)).toEqual({
      delivered: true,
      status: 'delivered',
    });
  });

  it('waits for every gateway before anything weaker, and ranks queued, backlogged, queue_full, not_subscribed, offline', () => {
    expect(commandAnswer([outcome('a', { queued: 1 })], both)).toBeUndefined();
    const answer = (o: Partial<GatewayCommandOutcome>) =>
      commandAnswer([outcome('a', o), outcome('b')], both);
    expect(answer({ queued: 1, backlogged: 1, queueFull: 1, connected: 1 })).toMatchObject({
      status: 'queued',
    });
    expect(answer({ backlogged: 1, queueFull: 1, connected: 1 })).toMatchObject({ status: 'backlogged' });
    expect(answer({ queueFull: 1, connected: 1 })).toMatchObject({ status: 'queue_full' });
    expect(answer({ connected: 1 })).toMatchObject({ status: 'not_subscribed' });
    expect(answer({})).toEqual({ delivered: false, status: 'offline' });
  });

  it('answers refused at once, with why, from the gateway that holds the Sparkplug session', () => {
    const refusal = "no metric 'Nope' in the DBIRTH in force";
    expect(commandAnswer([outcome('a', { connected: 1, refused: refusal })], both)).toEqual({
      delivered: false,
      status: 'refused',
      error: refusal,
    });
  });

  it('waits also for gateways only the others know of', () => {
    const outcomes = [outcome('a'), outcome('b', { known: ['b', 'c'] })];
    expect(isComplete(outcomes, both)).toBe(false);
    expect(commandAnswer(outcomes, both)).toBeUndefined();
    expect(commandAnswer([...outcomes, outcome('c')], both)).toMatchObject({ status: 'offline' });
  });

  it('reads outcomes of gateways that predate backlogged as none', () => {
    const { backlogged: _, ...older } = outcome('a', { connected: 1 });
    expect(GatewayCommandOutcome.parse(older)).toMatchObject({ backlogged: 0 });
  });

  it('after the wait says what is known, never offline', () => {
    expect(partialAnswer([outcome('a', { queued: 1 })])).toMatchObject({ status: 'queued' });
    expect(partialAnswer([outcome('a')])).toBeUndefined();
  });
});

describe('GatewayDirectory', () => {
  it('holds itself and every gateway heard within three of its intervals', () => {
    let now = 0;
    const directory = new GatewayDirectory('me', () => now);
    expect([...directory.live()]).toEqual(['me']);
    directory.seen('b', 1_000);
    directory.seen('c', 5_000);
    now = 3_000;
    expect([...directory.live()].sort()).toEqual(['b', 'c', 'me']);
    now = 3_001;
    expect([...directory.live()].sort()).toEqual(['c', 'me']);
    now = 15_001;
    expect([...directory.live()]).toEqual(['me']);
  });
});
