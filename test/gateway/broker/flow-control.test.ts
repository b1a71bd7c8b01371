import { describe, expect, it } from 'vitest';
import { holdInFlight } from '../../../gateway/broker/flow-control.js';
import { fakeClient } from './fixtures.js';

describe('holdInFlight', () => {
  it('pauses reading at the bound and resumes once half are answered', () => {
    const client = fakeClient('dev-1');
    const state = { inFlight: 0, paused: false };
    let reached = 0;
    const answered: (Error | null | undefined)[] = [];
    const dones = Array.from({ length: 4 }, () =>
      holdInFlight(
        client,
        state,
        4,
        () => reached++,
        (err) => answered.push(err),
      ),
    );
    expect(state).toEqual({ inFlight: 4, paused: true });
    expect([client.paused, reached]).toEqual([1, 1]);
    dones[0]!();
    expect(client.resumed).toBe(0); // 3 > 4 / 2
    dones[1]!(null);
    expect(client.resumed).toBe(1);
    expect(state).toEqual({ inFlight: 2, paused: false });
    expect(answered).toEqual([undefined, null]);
  });

  it('answers once however often it is called', () => {
    const client = fakeClient('dev-1');
    const state = { inFlight: 0, paused: false };
    let answers = 0;
    const done = holdInFlight(
      client,
      state,
      10,
      () => {},
      () => answers++,
    );
    done();
    done(new Error('again'));
    expect(answers).toBe(1);
    expect(state.inFlight).toBe(0);
  });

  it('does not resume a connection closed meanwhile', () => {
    const client = fakeClient('dev-1');
    const state = { inFlight: 0, paused: false };
    const done = holdInFlight(
      client,
      state,
      1,
      () => {},
      () => {},
    );
    expect(client.paused).toBe(1);
    client.closed = true;
    done();
    expect(client.resumed).toBe(0);
    expect(state.paused).toBe(false);
  });

  it("passes a closed client's publish (its will) and an unknown client's straight through", () => {
    const done = () => {};
    const closed = fakeClient('dev-1');
    closed.closed = true;
    expect(holdInFlight(closed, { inFlight: 0, paused: false }, 1, () => {}, done)).toBe(done);
    expect(holdInFlight(fakeClient('dev-2'), undefined, 1, () => {}, done)).toBe(done);
  });
});
