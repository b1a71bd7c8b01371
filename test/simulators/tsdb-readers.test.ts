import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TsdbReadError } from '../../simulators/errors.js';
import {
  createTsdbReader,
  detectTsdb,
  InfluxQlReader,
  type ReadQuery,
  VictoriaMetricsReader,
} from '../../simulators/tsdb-readers.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => {
      const closed = new Promise((r) => s.close(r));
      s.closeAllConnections(); // fetch keeps connections alive; close() would wait for them
      return closed;
    }),
  );
});

/** A fake TSDB on a random port; `handle` answers each request. */
async function fake(handle: (req: IncomingMessage, url: URL, body: string, res: ServerResponse) => void) {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => handle(req, new URL(req.url ?? '/', 'http://x'), body, res));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, token: 't0k', org: 'iot', bucket: 'telemetry' };
}

const query: ReadQuery = {
  tenant: 'acme',
  devicePrefix: 'sim-1-',
  window: '10s',
  startMs: 1_000,
  endMs: 9_000,
};

describe('InfluxQlReader', () => {
  it('reads raw fields and aggregates from chunked InfluxQL answers', async () => {
    const seen: URLSearchParams[] = [];
    const settings = await fake((req, url, _body, res) => {
      expect(req.headers.authorization).toBe('Token t0k');
      seen.push(url.searchParams);
      const q = url.searchParams.get('q') ?? '';
      const chunks = q.includes('"telemetry_agg"')
        ? [
            {
              results: [
                {
                  series: [
                    {
                      name: 'telemetry_agg',
                      tags: { device: 'sim-1-0', metric: 'temperature' },
                      columns: ['time', 'count', 'sum', 'min', 'max', 'mean'],
                      values: [[0, 2, 41, 20, 21, 20.5]],
                    },
                  ],
                },
              ],
            },
          ]
        : [
            {
              results: [
                {
                  series: [
                    {
                      name: 'telemetry',
                      tags: { device: 'sim-1-0' },
                      columns: ['time', 'battery', 'temperature'],
                      values: [[1_000, 90, 20]],
                    },
                  ],
                  partial: true,
                },
              ],
            },
            {
              results: [
                {
                  series: [
                    {
                      name: 'telemetry',
                      tags: { device: 'sim-1-0' },
                      columns: ['time', 'battery', 'temperature'],
                      values: [[2_000, null, 21]],
                    },
                  ],
                },
              ],
            },
          ];
      res.end(chunks.map((c) => JSON.stringify(c)).join('\n'));
    });
    const { raw, agg } = await new InfluxQlReader(settings).read(query);
    expect(raw).toEqual([
      { device: 'sim-1-0', metric: 'battery', ts: 1_000, value: 90 },
      { device: 'sim-1-0', metric: 'temperature', ts: 1_000, value: 20 },
      { device: 'sim-1-0', metric: 'temperature', ts: 2_000, value: 21 },
    ]);
    expect(agg.map((p) => [p.field, p.value])).toEqual([
      ['count', 2],
      ['sum', 41],
      ['min', 20],
      ['max', 21],
      ['mean', 20.5],
    ]);
    for (const params of seen) {
      expect(params.get('db')).toBe('telemetry');
      expect(params.get('epoch')).toBe('ms');
      expect(params.get('chunked')).toBe('true');
      expect(params.get('q')).toContain(`"tenant" = 'acme' AND "device" =~ /^sim-1-/`);
      expect(params.get('q')).toContain('time >= 1000ms AND time <= 9000ms');
    }
    expect(seen.map((p) => p.get('q'))).toContainEqual(expect.stringContaining(`"window" = '10s'`));
  });

  it('turns an InfluxQL error into TsdbReadError', async () => {
    const settings = await fake((_req, _url, _body, res) => {
      res.end(JSON.stringify({ results: [{ error: 'database not found: telemetry' }] }));
    });
    await expect(new InfluxQlReader(settings).read(query)).rejects.toThrow(/database not found/);
    await expect(new InfluxQlReader(settings).read(query)).rejects.toBeInstanceOf(TsdbReadError);
  });
});

describe('VictoriaMetricsReader', () => {
  it('selects the run’s raw series and 10 s aggregates through the export API', async () => {
    const matches: string[] = [];
    const settings = await fake((_req, url, body, res) => {
      expect(url.pathname).toBe('/api/v1/export');
      const match = new URLSearchParams(body).get('match[]') ?? '';
      matches.push(match);
      const lines = match.includes('telemetry_agg_')
        ? [
            {
              metric: {
                __name__: 'telemetry_agg_count',
                device: 'sim-1-0',
                metric: 'temperature',
                window: '10s',
              },
              values: [2, 3],
              timestamps: [0, 0],
            },
          ]
        : [
            {
              metric: { __name__: 'telemetry_temperature', device: 'sim-1-0', tenant: 'acme' },
              values: [20, 21],
              timestamps: [1_000, 2_000],
            },
          ];
      res.end(lines.map((l) => JSON.stringify(l)).join('\n'));
    });
    const { raw, agg } = await new VictoriaMetricsReader(settings).read(query);
    expect(raw).toEqual([
      { device: 'sim-1-0', metric: 'temperature', ts: 1_000, value: 20 },
      { device: 'sim-1-0', metric: 'temperature', ts: 2_000, value: 21 },
    ]);
    expect(agg).toEqual([
      { device: 'sim-1-0', metric: 'temperature', start: 0, field: 'count', value: 2 },
      { device: 'sim-1-0', metric: 'temperature', start: 0, field: 'count', value: 3 },
    ]);
    expect(matches).toContainEqual(
      expect.stringMatching(
        /^\{__name__=~"telemetry_\.\+",tenant="acme",device=~"sim-1-\.\*",window="",kit_nonce!=/,
      ),
    );
    expect(matches).toContainEqual(
      expect.stringContaining(
        '__name__=~"telemetry_agg_(count|sum|min|max|mean)",tenant="acme",device=~"sim-1-.*",window="10s"',
      ),
    );
  });
});

describe('detectTsdb', () => {
  it('tells VictoriaMetrics from InfluxDB by what they answer', async () => {
    const vm = await fake((_req, url, _body, res) => {
      if (url.pathname === '/api/v1/status/tsdb') res.end(JSON.stringify({ status: 'success', data: {} }));
      else res.writeHead(204).end();
    });
    const influx = await fake((_req, url, _body, res) => {
      if (url.pathname === '/ping') res.writeHead(204, { 'X-Influxdb-Version': 'v2.7.1' }).end();
      else res.writeHead(404).end();
    });
    const other = await fake((_req, _url, _body, res) => res.writeHead(404).end());
    expect(await detectTsdb(vm)).toBe('victoria');
    expect(await detectTsdb(influx)).toBe('influx');
    expect((await createTsdbReader('auto', influx)).kind).toBe('influx');
    await expect(detectTsdb(other)).rejects.toThrow(/neither VictoriaMetrics nor InfluxDB/);
    await expect(detectTsdb({ ...other, url: 'http://127.0.0.1:1' })).rejects.toThrow(
      /cannot reach the TSDB/,
    );
  });
});
