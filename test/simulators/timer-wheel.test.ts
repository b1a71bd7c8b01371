import { describe, expect, it } from 'vitest';
import { TimerWheel } from '../../simulators/timer-wheel.js';

describe('TimerWheel', () => {
  it('hands out items by tick, earliest first, and keeps what is not due', () => {
    const wheel = new TimerWheel<string>(10);
    wheel.schedule(25, 'c');
    wheel.schedule(3, 'a');
    wheel.schedule(9, 'b');
    wheel.schedule(100, 'z');
    expect(wheel.due(0)).toEqual(['a', 'b']);
    expect(wheel.due(19)).toEqual([]);
    expect(wheel.due(31)).toEqual(['c']);
    expect(wheel.size).toBe(1);
  });

  it('catches up after a stall and files past times for the next tick', () => {
    const wheel = new TimerWheel<number>(10);
    for (let i = 0; i < 50; i++) wheel.schedule(i * 7, i);
    expect(wheel.due(1_000)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    wheel.schedule(5, 99); // in the past now
    expect(wheel.due(1_000)).toEqual([]);
    expect(wheel.due(1_010)).toEqual([99]);
    expect(wheel.size).toBe(0);
  });
});
