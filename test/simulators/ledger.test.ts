import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toCanonical } from '../../contract/units.js';
import type { OutMessage } from '../../simulators/device-script.js';
import { LedgerInvalidError } from '../../simulators/errors.js';
import { LedgerBook, readLedger, writeLedger } from '../../simulators/ledger.js';
import { encodeReading } from '../../simulators/payloads.js';

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ledger-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function data(ts: number, seq: number, values: Record<string, number>, unit?: string): OutMessage {
  const r = encodeReading({ ts, seq, values }, unit ? 2 : 1, unit);
  return { kind: 'data', payload: r.json, encoding: 'json', readings: [r], duplicate: false, swapped: false };
}

function sampleBook(): LedgerBook {
  const book = new LedgerBook();
  book.addDevice('d-1', 'thermometer', { type: 'thermometer', site: 'site-1' });
  book.addDevice('d-2', 'meter', { type: 'meter', site: 'site-2' });
  const a = data(T0 + 1_000, 0, { temperature: 20, battery: 90 });
  // 21.5 °C goes out as 70.7 °F; the ledger keeps what the gateway converts that back to.
  const b = data(T0 + 2_000, 1, { temperature: 21.5, battery: 89.9 }, 'degF');
  const c = data(T0 + 12_000, 2, { temperature: 22, battery: 89.8 });
  for (const m of [a, b, c]) {
    book.sent('d-1', m);
    book.acked('d-1', m);
  }
  const dup: OutMessage = { ...a, kind: 'duplicate', readings: [] };
  book.sent('d-1', dup);
  book.acked('d-1', dup);
  const invalid: OutMessage = {
    kind: 'invalid',
    payload: '{',
    encoding: 'json',
    readings: [],
    reason: 'PAYLOAD_NOT_JSON',
    duplicate: false,
    swapped: false,
  };
  book.sent('d-2', invalid);
  book.acked('d-2', invalid);
  const unacked = data(T0 + 3_000, 0, { power: 100 });
  book.sent('d-2', unacked);
  book.unacked('d-2', 1);
  book.reconnected('d-1', true);
  book.silentFrom('d-2', T0 + 4_000);
  return book;
}

const header = {
  runId: 'sim-1-abcd',
  tenant: 'sim-1-abcd',
  devicePrefix: 'sim-1-abcd-',
  seed: 1,
  auth: 'registry' as const,
  qos: 1 as const,
  promised: true,
  startedAt: new Date(T0).toISOString(),
  endedAt: new Date(T0 + 60_000).toISOString(),
  options: { devices: 2 },
};

describe('ledger', () => {
  it('keeps acknowledged readings per device, metric and 10 s window, in canonical units', () => {
    const ledger = sampleBook().ledger(header, 1);
    const temperature = ledger.windows.filter((w) => w.device === 'd-1' && w.metric === 'temperature');
    const converted = toCanonical('temperature', 70.7, 'degF');
    const fromF = converted.ok ? converted.value : Number.NaN;
    expect(temperature).toEqual([
      {
        type: 'window',
        device: 'd-1',
        metric: 'temperature',
        start: T0,
        count: 2,
        sum: 20 + fromF,
        min: 20,
        max: fromF,
      },
      {
        type: 'window',
        device: 'd-1',
        metric: 'temperature',
        start: T0 + 10_000,
        count: 1,
        sum: 22,
        min: 22,
        max: 22,
      },
    ]);
    expect(ledger.windows.filter((w) => w.device === 'd-2')).toEqual([]);
    expect(ledger.totals).toMatchObject({
      devices: 2,
      sent: 6,
      acked: 5,
      unacked: 1,
      unackedReadings: 1,
      readings: 3,
      invalidSent: { PAYLOAD_NOT_JSON: 1 },
      invalidAcked: { PAYLOAD_NOT_JSON: 1 },
      duplicatesSent: 1,
      duplicatesAcked: 1,
      fahrenheit: 1,
      churnReconnects: 1,
      offlineDevices: 1,
    });
    expect(ledger.header).toMatchObject({
      firstTs: T0 + 1_000,
      lastTs: T0 + 12_000,
      metrics: ['battery', 'temperature'],
    });
  });

  it('round-trips through its file', async () => {
    const ledger = sampleBook().ledger(header, 1);
    const path = join(dir, 'round-trip.jsonl');
    await writeLedger(path, ledger);
    expect(await readLedger(path)).toEqual(ledger);
    const lines = (await readFile(path, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).type);
    expect(lines).toEqual(['header', 'device', 'device', 'window', 'window', 'window', 'window', 'totals']);
  });

  it('refuses a damaged or unfinished ledger, naming the lines', async () => {
    const ledger = sampleBook().ledger(header, 0);
    const path = join(dir, 'bad.jsonl');
    await writeLedger(path, ledger);
    const lines = (await readFile(path, 'utf8')).trim().split('\n');
    await writeFile(
      path,
      [lines[0], '{"type":"window","device":"d-1"}', 'not json', ...lines.slice(1, -1)].join('\n'),
    );
    const err = await readLedger(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LedgerInvalidError);
    expect((err as LedgerInvalidError).problems).toEqual([
      expect.stringMatching(/^line 2: metric: /),
      'line 3: not JSON',
    ]);
    await writeFile(path, lines.slice(0, -1).join('\n'));
    await expect(readLedger(path)).rejects.toThrow(/no totals line/);
  });
});
