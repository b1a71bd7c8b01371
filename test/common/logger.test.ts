import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
  };
}

describe('createLogger', () => {
  it('redacts credentials at the top level and one level down, and keeps everything else', () => {
    const out = capture();
    const log = createLogger('test', 'info', out.stream);
    log.info(
      {
        token: 'operator-token-value',
        device: { id: 'dev-1', secret: 's3cret', password: 'pw', secretHash: 'h' },
        headers: { authorization: 'Bearer operator-token-value', host: 'gw' },
      },
      'hello',
    );
    const [line] = out.lines();
    const text = JSON.stringify(line);
    for (const leaked of ['operator-token-value', 's3cret', '"pw"', '"h"'])
      expect(text).not.toContain(leaked);
    expect(line).toMatchObject({
      msg: 'hello',
      token: '[redacted]',
      device: { id: 'dev-1', secret: '[redacted]', password: '[redacted]', secretHash: '[redacted]' },
      headers: { authorization: '[redacted]', host: 'gw' },
    });
  });
});
