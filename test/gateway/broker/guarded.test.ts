import { describe, expect, it } from 'vitest';
import { guarded } from '../../../gateway/broker/guarded.js';
import { log } from './fixtures.js';

describe('guarded', () => {
  it("hands a hook's exception to done instead of throwing it", () => {
    const errors: Error[] = [];
    guarded(
      log,
      'dev-1',
      () => {
        throw new Error('bug');
      },
      (err) => errors.push(err),
    );
    expect(errors.map((e) => e.message)).toEqual(['bug']);
  });

  it('leaves done alone when the hook returns', () => {
    let ran = false;
    guarded(
      log,
      'dev-1',
      () => {
        ran = true;
      },
      () => {
        throw new Error('done must not be called');
      },
    );
    expect(ran).toBe(true);
  });
});
