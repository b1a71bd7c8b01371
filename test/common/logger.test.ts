import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, resolveLogFormat } from '../../common/logger.js';

function capture(): { stream: Writable; text: () => string; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    stream,
    text: () => chunks.join(''),
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

  it('writes one readable line per entry in the pretty format, still redacted', () => {
    const out = capture();
    const log = createLogger('gateway', 'info', out.stream, 'pretty');
    log.info({ port: 1883, device: { id: 'dev-1', secret: 's3cret' } }, 'listening');
    log.debug('not at this level');
    const lines = out.text().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: gateway: listening \{.*"port":1883/);
    expect(lines[0]).not.toContain('s3cret');
    expect(lines[0]).toContain('[redacted]');
  });

  it('is readable on a terminal and JSON for whatever collects the logs, unless told', () => {
    expect(resolveLogFormat('auto', true)).toBe('pretty');
    expect(resolveLogFormat('auto', false)).toBe('json');
    expect(resolveLogFormat('json', true)).toBe('json');
    expect(resolveLogFormat('pretty', false)).toBe('pretty');
  });
});
