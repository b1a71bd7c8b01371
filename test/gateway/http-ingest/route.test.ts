import { expect, it } from 'vitest';
import { bodyEncoding, parseRoute } from '../../../gateway/http-ingest/route.js';

it('routes telemetry and status of a valid device id, query ignored', () => {
  expect(parseRoute('/v1/devices/dev-1/telemetry')).toEqual({ deviceId: 'dev-1', kind: 'telemetry' });
  expect(parseRoute('/v1/devices/dev-1/status?x=1')).toEqual({ deviceId: 'dev-1', kind: 'status' });
});

it('routes nothing else', () => {
  for (const path of [
    undefined,
    '/',
    '/v1/devices/dev-1',
    '/v1/devices/dev-1/commands',
    '/v1/devices/dev-1/telemetry/x',
    '/v1/devices/a%2Fb/telemetry',
    '/v1/devices/%E0%A4%A/telemetry',
    '/v1/devices/../telemetry',
  ])
    expect(parseRoute(path)).toBeUndefined();
});

it('takes JSON, with parameters or none at all, and no other type', () => {
  expect(bodyEncoding('application/json')).toBe('json');
  expect(bodyEncoding('Application/JSON; charset=utf-8')).toBe('json');
  expect(bodyEncoding(undefined)).toBe('json');
  expect(bodyEncoding('application/cbor')).toBe('cbor');
  expect(bodyEncoding('text/plain')).toBeUndefined();
  expect(bodyEncoding('application/x-www-form-urlencoded')).toBeUndefined();
});
