import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { fleetRowsWriter } from '../../processors/effects.js';
import { InfluxWriteRejectedError } from '../../processors/errors.js';
import type { FleetRow } from '../../processors/rollups/fleet-rollup.js';
import type { InfluxWriter } from '../../processors/sink/influx-writer.js';

const log = createLogger('test', 'silent');
const row = (groupValue: string): FleetRow => ({
  tenant: 'acme',
  metric: 'temperature',
  window: '10s',
  startMs: 1_800_000_000_000,
  group: 'site',
  groupValue,
  devices: 1,
  count: 1,
  mean: 1,
  min: 1,
  max: 1,
});

/** The ordered writer, as far as the fleet writer uses it. */
const sinkThat = (write: (lines: string[]) => Promise<void>) => ({
  ordered: { write } as unknown as InfluxWriter,
});

describe('fleetRowsWriter', () => {
  it('skips a row that cannot be a line and writes the others', async () => {
    const written: string[] = [];
    let invalid = 0;
    const write = fleetRowsWriter(
      sinkThat(async (lines) => {
        written.push(...lines);
      }),
      log,
      (n) => (invalid += n),
    );
    await write([row('paris'), row('hall\\'), row('lyon')]);
    expect(written.map((l) => l.match(/group_value=(\w+)/)?.[1])).toEqual(['paris', 'lyon']);
    expect(invalid).toBe(1);
  });

  it('drops rows the TSDB refuses for good instead of handing them back to be retried for ever', async () => {
    let invalid = 0;
    const refused = fleetRowsWriter(
      sinkThat(() => Promise.reject(new InfluxWriteRejectedError(400, 'bad line', 2))),
      log,
      (n) => (invalid += n),
    );
    await expect(refused([row('a'), row('b')])).resolves.toBeUndefined();
    expect(invalid).toBe(2);
    // Anything else (the writer closing at shutdown) still fails the write: the rows are kept.
    const closed = fleetRowsWriter(
      sinkThat(() => Promise.reject(new Error('closed'))),
      log,
      () => undefined,
    );
    await expect(closed([row('a')])).rejects.toThrow('closed');
  });
});
