import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { CanonicalEvent } from '../../contract/event.js';
import { InfluxWriteRejectedError, type InfluxWriterClosedError } from '../../processors/errors.js';
import { InfluxWriter, type InfluxWriterOptions } from '../../processors/sink/influx-writer.js';
import { telemetryLine } from '../../processors/sink/lines.js';
import {
  findDuplicates,
  type Sample,
  seriesKey,
  startVictoriaMetrics,
  type Tsdb,
} from '../kit/victoria-metrics.js';

let tsdb: Tsdb;
const writers: InfluxWriter[] = [];
const proxies: Server[] = [];
const log = createLogger('test', 'silent');

beforeAll(async () => {
  tsdb = await startVictoriaMetrics();
});

afterEach(async () => {
  await Promise.all(writers.splice(0).map((w) => w.close(1_000)));
  for (const p of proxies.splice(0)) {
    p.closeAllConnections();
    p.close();
  }
});

afterAll(async () => {
  await tsdb?.dispose();
});

interface Observed {
  batches: number[];
  waits: number[];
  retries: number;
  rejected: number[];
}

function makeWriter(options: Partial<InfluxWriterOptions> = {}): { writer: InfluxWriter; seen: Observed } {
  const seen: Observed = { batches: [], waits: [], retries: 0, rejected: [] };
  const writer = new InfluxWriter({
    url: tsdb.url,
    token: 'test-token',
    org: 'iot',
    bucket: 'telemetry',
    logger: log,
    observer: {
      batchWritten: (e) => {
        seen.batches.push(e.lines);
        seen.waits.push(e.waitMs);
      },
      retry: () => {
        seen.retries++;
      },
      writeRejected: (e) => {
        seen.rejected.push(e.lines);
      },
    },
    ...options,
  });
  writers.push(writer);
  return { writer, seen };
}

/** Test lines: measurement `wt`, one series per device, value = index, time = base + index ms. */
function points(
  run: string,
  count: number,
  base: number,
  devices = 10,
  offset = 0,
  extraTag?: string,
): string[] {
  return Array.from({ length: count }, (_, k) => {
    const i = offset + k;
    const kind = extraTag ? `,kind=${extraTag}` : '';
    return `wt,device=d${i % devices}${kind},run=${run} v=${i} ${base + i}`;
  });
}

/** A recent, whole-second base time: inside VictoriaMetrics' current partition and retention. */
const recentBase = () => Math.floor(Date.now() / 1000) * 1000 - 600_000;

/** The distinct (series, time) → value pairs, and whether any key holds two different values. */
function distinct(samples: readonly Sample[]): { map: Map<string, number>; conflicts: number } {
  const map = new Map<string, number>();
  let conflicts = 0;
  for (const s of samples) {
    const key = `${seriesKey(s)}@${s.timestamp}`;
    const seen = map.get(key);
    if (seen !== undefined && seen !== s.value) conflicts++;
    map.set(key, s.value);
  }
  return { map, conflicts };
}

interface Recorded {
  /** When the request arrived (Date.now()). */
  at: number;
  lines: string[];
  encoding: string | undefined;
  status: number;
}

/**
 * A loopback proxy in front of VictoriaMetrics that records each write request (lines, content-encoding)
 * and can answer in its place, for what VictoriaMetrics never does (it skips bad lines with a 204).
 */
async function startProxy(
  answer: (
    lines: string[],
    index: number,
  ) => { status: number; body: string; headers?: Record<string, string> } | undefined,
  forwardDelayMs = 0,
): Promise<{ url: string; requests: Recorded[]; maxOpen: (reset?: boolean) => number }> {
  const requests: Recorded[] = [];
  let open = 0;
  let maxOpen = 0;
  const server = createServer((req, res) => {
    const at = Date.now();
    maxOpen = Math.max(maxOpen, ++open);
    res.on('close', () => open--);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const encoding = req.headers['content-encoding'];
      const lines = (encoding === 'gzip' ? gunzipSync(raw) : raw).toString('utf8').split('\n');
      const recorded: Recorded = { at, lines, encoding, status: 0 };
      requests.push(recorded);
      const own = answer(lines, requests.length - 1);
      if (own) {
        recorded.status = own.status;
        res.writeHead(own.status, { 'content-type': 'application/json', ...own.headers });
        res.end(own.body);
        return;
      }
      const headers: IncomingHttpHeaders = { ...req.headers, host: `127.0.0.1:${tsdb.port}` };
      const upstream = request(`${tsdb.url}${req.url}`, { method: req.method, headers }, (up) => {
        recorded.status = up.statusCode ?? 0;
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.on('error', () => {
        recorded.status = 502;
        res.writeHead(502).end();
      });
      setTimeout(() => upstream.end(raw), forwardDelayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxies.push(server);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const readMax = (reset = false) => {
    const seenMax = maxOpen;
    if (reset) maxOpen = open;
    return seenMax;
  };
  return { url: `http://127.0.0.1:${port}`, requests, maxOpen: readMax };
}

function deadPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer().listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

type State = 'pending' | 'resolved' | 'rejected';
function track(promise: Promise<void>): { promise: Promise<void>; state: () => State } {
  let state: State = 'pending';
  const tracked = promise.then(
    () => {
      state = 'resolved';
    },
    (err) => {
      state = 'rejected';
      throw err;
    },
  );
  tracked.catch(() => {});
  return { promise: tracked, state: () => state };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('InfluxWriter against VictoriaMetrics', () => {
  it('writes canonical events that read back exactly: values, tags, timestamps', async () => {
    const { writer } = makeWriter({ flushIntervalMs: 100 });
    const tenant = `t ${randomUUID().slice(0, 8)},x=y`;
    const base = recentBase() + 123;
    const events: CanonicalEvent[] = Array.from({ length: 50 }, (_, i) => ({
      id: `e${i}`,
      tenant,
      deviceId: `dev ${i % 5}`,
      ts: new Date(base + i * 1_001).toISOString(),
      receivedAt: new Date(base + i * 1_001 + 5).toISOString(),
      schemaVersion: 1,
      metrics: {
        temperature: { value: 20 + i / 8, unit: 'Cel' },
        energy: { value: i === 7 ? 1.5e21 : 1000 - i * 1000, unit: 'J' },
      },
      labels: { site: i % 2 ? 'hall=b 2' : 'north,1', type: 'thermo', secret: 'not promoted' },
    }));
    await writer.write(events.map((e) => telemetryLine(e)!));
    expect(writer.pendingLines).toBe(0);

    const samples = await tsdb.waitForSamples(
      { measurement: 'telemetry', field: ['temperature', 'energy'], tags: { tenant } },
      (s) => s.length >= 100,
    );
    const expected = events.flatMap((e) =>
      Object.entries(e.metrics).map(([field, m]) => ({
        name: `telemetry_${field}`,
        tags: { tenant, device: e.deviceId, site: e.labels.site!, type: 'thermo' },
        timestamp: Date.parse(e.ts),
        value: m.value,
      })),
    );
    const key = (s: { name: string; tags: Record<string, string>; timestamp: number }) =>
      `${seriesKey(s)}@${s.timestamp}`;
    expect(new Map(samples.map((s) => [key(s), s.value]))).toEqual(
      new Map(expected.map((s) => [key(s), s.value])),
    );
    expect(samples).toHaveLength(100);
    expect(findDuplicates(samples)).toEqual([]);
  });

  it('sends 12 000 points as requests of at most 5000 gzipped lines and loses none', async () => {
    const proxy = await startProxy(() => undefined);
    const { writer, seen } = makeWriter({ url: proxy.url });
    const run = randomUUID();
    const started = Date.now();
    const halves = [
      writer.write(points(run, 7_000, recentBase(), 10, 0)),
      writer.write(points(run, 5_000, recentBase(), 10, 7_000)),
    ];
    // Two full batches went out at once; the 2000-line tail waits for the flush interval.
    expect(writer.pendingLines).toBe(12_000);
    await Promise.all(halves);
    expect(Date.now() - started).toBeLessThan(1_000 + 2_000);
    expect(seen.batches).toEqual([5_000, 5_000, 2_000]);
    expect(proxy.requests.map((r) => r.lines.length)).toEqual([5_000, 5_000, 2_000]);
    expect(proxy.requests.every((r) => r.encoding === 'gzip' && r.status === 204)).toBe(true);
    expect(seen.waits[2]).toBeGreaterThanOrEqual(990);

    const samples = await tsdb.waitForSamples(
      { measurement: 'wt', field: 'v', tags: { run } },
      (s) => s.length >= 12_000,
    );
    expect(samples).toHaveLength(12_000);
    expect(findDuplicates(samples)).toEqual([]);
    expect(new Set(samples.map((s) => s.value)).size).toBe(12_000);
  });

  it('overlaps requests up to maxInFlight when the TSDB is slow, and loses nothing', async () => {
    const slow = await startProxy(() => undefined, 150);
    const { writer, seen } = makeWriter({ url: slow.url, batchLines: 1_000, maxInFlight: 3 });
    const run = randomUUID();
    await Promise.all(
      Array.from({ length: 9 }, (_, k) => writer.write(points(run, 1_000, recentBase(), 10, k * 1_000))),
    );
    expect(slow.maxOpen()).toBe(3);
    expect(seen.batches).toEqual(Array(9).fill(1_000));
    const samples = await tsdb.waitForSamples(
      { measurement: 'wt', field: 'v', tags: { run } },
      (s) => s.length >= 9_000,
    );
    expect(new Set(samples.map((s) => s.value)).size).toBe(9_000);
    expect(findDuplicates(samples)).toEqual([]);

    // The default keeps one request in flight, so lines of one series stay in order.
    expect(slow.maxOpen(true)).toBe(3);
    const ordered = makeWriter({ url: slow.url, batchLines: 1_000 }).writer;
    await Promise.all(
      Array.from({ length: 3 }, (_, k) =>
        ordered.write(points(run, 1_000, recentBase(), 10, 20_000 + k * 1_000)),
      ),
    );
    expect(slow.maxOpen()).toBe(1);
  });

  it('sends a batch that is not full once its oldest line has waited the flush interval', async () => {
    const proxy = await startProxy(() => undefined);
    const { writer, seen } = makeWriter({ url: proxy.url, flushIntervalMs: 300 });
    const run = randomUUID();
    const started = Date.now();
    const written = writer.write(points(run, 5, recentBase()));
    await sleep(150);
    // Within the interval nothing may have been sent (checked only if the sleep was not overrun).
    if (Date.now() - started < 290) expect(proxy.requests).toHaveLength(0);
    expect(writer.pendingLines).toBe(5);
    await written;
    expect(proxy.requests).toHaveLength(1);
    expect(proxy.requests[0]!.at - started).toBeGreaterThanOrEqual(300);
    expect(Date.now() - started).toBeLessThan(300 + 700);
    expect(seen.batches).toEqual([5]);

    // A full batch goes at once, without waiting for the interval.
    const { writer: fast, seen: fastSeen } = makeWriter({ url: proxy.url, batchLines: 100 });
    const t0 = Date.now();
    await fast.write(points(run, 100, recentBase(), 10, 5));
    expect(proxy.requests[1]!.at - t0).toBeLessThan(900);
    expect(fastSeen.batches).toEqual([100]);
    await tsdb.waitForSamples({ measurement: 'wt', field: 'v', tags: { run } }, (s) => s.length >= 105);
  });

  it('refuses a flush interval above 1 s and other nonsense, with a stable code', () => {
    for (const bad of [
      { flushIntervalMs: 60_000 },
      { flushIntervalMs: 0 },
      { batchLines: 0 },
      { maxRetryDelayMs: 1.5 },
    ]) {
      expect(() => new InfluxWriter({ url: tsdb.url, token: '', org: 'iot', bucket: 'b', ...bad })).toThrow(
        expect.objectContaining({ code: 'INFLUX_WRITER_CONFIG' }),
      );
    }
  });

  it('keeps writes pending while the TSDB is down, stays bounded, and loses nothing on recovery', async () => {
    const highWaterLines = 2_000;
    const { writer, seen } = makeWriter({
      batchLines: 500,
      flushIntervalMs: 50,
      minRetryDelayMs: 50,
      maxRetryDelayMs: 300,
      highWaterLines,
    });
    const run = randomUUID();
    const base = recentBase();
    const offer = 100;
    const writes: Array<ReturnType<typeof track>> = [];
    let offered = 0;
    let maxPending = 0;
    let stopped = false;
    // A well-behaved caller: offers 100 points every 10 ms unless the writer is overloaded.
    const producer = (async () => {
      while (!stopped) {
        if (writer.accepting) {
          writes.push(track(writer.write(points(run, offer, base, 20, offered))));
          offered += offer;
        }
        maxPending = Math.max(maxPending, writer.pendingLines);
        await sleep(10);
      }
    })();

    await sleep(300);
    const offeredBeforeOutage = offered;
    expect(offeredBeforeOutage).toBeGreaterThan(0);
    await tsdb.stop();
    const stoppedAt = Date.now();
    await sleep(2_500);

    // Down for 2.5 s: nothing rejected, the backlog grew to the high-water mark and stopped there.
    expect(writes.some((w) => w.state() === 'rejected')).toBe(false);
    expect(writes.some((w) => w.state() === 'pending')).toBe(true);
    expect(writer.overloaded).toBe(true);
    expect(writer.pendingLines).toBeGreaterThanOrEqual(highWaterLines);
    expect(maxPending).toBeLessThanOrEqual(highWaterLines + offer);
    expect(writer.pendingLines).toBeLessThanOrEqual(offered);
    const pendingWrites = writes.filter((w) => w.state() === 'pending').length;
    expect(writer.pendingLines).toBe(pendingWrites * offer);
    expect(seen.retries).toBeGreaterThanOrEqual(3);
    const offeredDuringOutage = offered;

    await tsdb.restart();
    await writer.whenAccepting();
    const recoveredAfterMs = Date.now() - stoppedAt;
    stopped = true;
    await producer;
    await Promise.all(writes.map((w) => w.promise));
    expect(writer.pendingLines).toBe(0);
    expect(offered).toBeGreaterThanOrEqual(offeredDuringOutage);
    expect(recoveredAfterMs).toBeLessThan(2_500 + 5_000);

    await tsdb.waitForSamples(
      { measurement: 'wt', field: 'v', tags: { run } },
      (s) => distinct(s).map.size >= offered,
      15_000,
    );
    // Wait until nothing more can arrive, then count what was stored twice.
    await tsdb.settle({ at: [base] });
    const settled = await tsdb.readSamples({ measurement: 'wt', field: 'v', tags: { run } });
    const { map, conflicts } = distinct(settled);
    expect(map.size).toBe(offered);
    expect(conflicts).toBe(0);
    for (let i = 0; i < offered; i++) {
      expect(map.get(`wt_v,device=d${i % 20},run=${run}@${base + i}`)).toBe(i);
    }
    // VictoriaMetrics keeps a re-sent sample twice where InfluxDB would overwrite it: report, don't hide.
    const duplicates = findDuplicates(settled);
    expect(settled.length).toBe(offered + duplicates.reduce((n, d) => n + d.values.length - 1, 0));
    if (duplicates.length > 0)
      console.info(`outage test: ${duplicates.length} samples stored twice (re-sent)`);
  });

  it('fails only the write() that InfluxDB rejects with 400 and carries on with the rest', async () => {
    const proxy = await startProxy((lines) =>
      lines.some((l) => l.includes('kind=poison'))
        ? {
            status: 400,
            body: JSON.stringify({ code: 'invalid', message: 'unable to parse points: bad timestamp' }),
          }
        : undefined,
    );
    const { writer, seen } = makeWriter({ url: proxy.url, flushIntervalMs: 100 });
    const run = randomUUID();
    const base = recentBase();
    const a = track(writer.write(points(run, 2, base, 10, 0)));
    const b = track(writer.write(points(run, 1, base, 10, 2, 'poison')));
    const c = track(writer.write(points(run, 2, base, 10, 3)));
    const error = await b.promise.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InfluxWriteRejectedError);
    expect(error).toMatchObject({ code: 'INFLUX_WRITE_REJECTED', statusCode: 400, lines: 1 });
    expect((error as Error).message).toContain('unable to parse points: bad timestamp');
    await a.promise;
    await c.promise;
    await writer.write(points(run, 2, base, 10, 5));
    expect(seen.rejected).toEqual([1]);
    expect(writer.pendingLines).toBe(0);
    // The batch a+b+c was split along write() calls until the poison write stood alone.
    expect(proxy.requests.map((r) => [r.lines.length, r.status])).toEqual([
      [5, 400],
      [3, 400],
      [2, 204],
      [1, 400],
      [2, 204],
      [2, 204],
    ]);
    // Absence needs a barrier: after settle() the poison point would be visible if it had been stored.
    await tsdb.settle({ at: [base] });
    const samples = await tsdb.readSamples({ measurement: 'wt', tags: { run } });
    expect(samples.map((s) => s.value).sort((x, y) => x - y)).toEqual([0, 1, 3, 4, 5, 6]);
  });

  it('retries 5xx answers with backoff, honouring Retry-After within the cap', async () => {
    const proxy = await startProxy((_lines, index) =>
      index < 2 ? { status: 503, body: '{"message":"busy"}', headers: { 'retry-after': '1' } } : undefined,
    );
    const { writer, seen } = makeWriter({ url: proxy.url, flushIntervalMs: 10, maxRetryDelayMs: 200 });
    const run = randomUUID();
    const started = Date.now();
    await writer.write(points(run, 3, recentBase()));
    expect(seen.retries).toBe(2);
    // Retry-After asked for 1 s, the cap is 200 ms: two retries take about 400 ms, not 2 s.
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(proxy.requests.map((r) => r.status)).toEqual([503, 503, 204]);
  });

  it('close() sends what is queued, then refuses new writes', async () => {
    const { writer, seen } = makeWriter({ flushIntervalMs: 1_000 });
    const run = randomUUID();
    const written = writer.write(points(run, 10, recentBase()));
    const started = Date.now();
    expect(await writer.close()).toEqual({ unwrittenLines: 0 });
    await written;
    expect(Date.now() - started).toBeLessThan(900); // did not wait for the interval
    expect(seen.batches).toEqual([10]);
    await expect(writer.write(points(run, 1, recentBase()))).rejects.toMatchObject({
      code: 'INFLUX_WRITER_CLOSED',
    });
    await tsdb.waitForSamples({ measurement: 'wt', field: 'v', tags: { run } }, (s) => s.length >= 10);
  });

  it('close() gives up after the grace period and rejects what is unwritten, loudly', async () => {
    const logged: Array<{ level: number; msg: string; unwrittenLines?: number }> = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => logged.push(JSON.parse(line)) });
    const { writer } = makeWriter({
      url: `http://127.0.0.1:${await deadPort()}`,
      maxRetryDelayMs: 100,
      logger,
    });
    const written = track(writer.write(points(randomUUID(), 10, recentBase())));
    const later = track(writer.write(points(randomUUID(), 5, recentBase())));
    const flushed = track(writer.flush());
    await sleep(200);
    expect(flushed.state()).toBe('pending'); // nothing is written while the TSDB is unreachable
    expect(written.state()).toBe('pending');
    const started = Date.now();
    const result = await writer.close(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(result).toEqual({ unwrittenLines: 15 });
    expect(logged).toEqual([
      expect.objectContaining({
        level: 50,
        unwrittenLines: 15,
        msg: expect.stringContaining('not accepted'),
      }),
    ]);
    await flushed.promise; // settled: by failure
    for (const w of [written, later]) {
      const err = await w.promise.then(
        () => undefined,
        (e: unknown) => e as InfluxWriterClosedError,
      );
      expect(err).toMatchObject({ code: 'INFLUX_WRITER_CLOSED' });
    }
    expect(writer.pendingLines).toBe(0);
    await writer.flush(); // nothing left: resolves at once
  });
});
