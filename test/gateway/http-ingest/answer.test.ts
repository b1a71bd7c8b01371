import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { HTTP_INGEST_CODES, telemetryAnswer } from '../../../gateway/http-ingest/answer.js';
import { readingOutcomes } from '../../../gateway/ingest/telemetry-handler.js';

it('answers 200 with what became of each reading', () => {
  const outcomes = readingOutcomes();
  outcomes.stored = 2;
  outcomes.duplicates = 1;
  outcomes.rejected.push({ index: 3, reason: 'UNIT_UNKNOWN', detail: 'furlongs' });
  expect(telemetryAnswer(outcomes, true, 5)).toEqual({
    status: 200,
    body: { stored: 2, duplicates: 1, rejected: [{ index: 3, code: 'UNIT_UNKNOWN', detail: 'furlongs' }] },
  });
});

it('answers 400 when the body as a whole was refused', () => {
  const outcomes = readingOutcomes();
  outcomes.rejected.push({ index: undefined, reason: 'PAYLOAD_NOT_JSON', detail: 'x' });
  expect(telemetryAnswer(outcomes, true, 5)).toMatchObject({
    status: 400,
    body: { code: 'PAYLOAD_REJECTED', stored: 0, rejected: [{ index: null, code: 'PAYLOAD_NOT_JSON' }] },
  });
});

it('answers 503 when a part was not confirmed, saying which were', () => {
  const outcomes = readingOutcomes();
  outcomes.stored = 1;
  outcomes.unconfirmed.push(2, 0);
  expect(telemetryAnswer(outcomes, false, 5)).toMatchObject({
    status: 503,
    headers: { 'retry-after': '5' },
    body: { code: 'NOT_STORED', stored: 1, duplicates: 0, unconfirmed: [0, 2] },
  });
});

it('documents every answer code in the README, and no code that does not exist', () => {
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('### HTTP ingest'), readme.indexOf('\n## Security\n'));
  const documented = [...section.matchAll(/^\|\s*\d{3}\s*\|\s*`([A-Z0-9_]+)`/gm)].map((m) => m[1]);
  expect(documented.sort()).toEqual(Object.keys(HTTP_INGEST_CODES).sort());
});
