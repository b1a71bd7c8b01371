import { expect, it } from 'vitest';
import { parseBasicAuth } from '../../../gateway/http-ingest/basic-auth.js';

const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;

it('splits user id and password at the first colon; the password may hold colons', () => {
  expect(parseBasicAuth(basic('dev-1:s3:cr:et'))).toEqual({
    username: 'dev-1',
    password: Buffer.from('s3:cr:et'),
  });
  expect(parseBasicAuth(basic('dev-1:'))).toEqual({ username: 'dev-1', password: Buffer.alloc(0) });
  expect(parseBasicAuth(`bAsIc  ${Buffer.from('a:b').toString('base64')}`)?.username).toBe('a');
});

it('takes no other scheme, no colon, nothing malformed', () => {
  expect(parseBasicAuth(undefined)).toBeUndefined();
  expect(parseBasicAuth('Bearer abc')).toBeUndefined();
  expect(parseBasicAuth(basic('no-colon'))).toBeUndefined();
  expect(parseBasicAuth('Basic !!!')).toBeUndefined();
  expect(parseBasicAuth('Basic')).toBeUndefined();
});
