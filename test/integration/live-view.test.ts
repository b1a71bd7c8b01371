import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alertsSubject } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { type RunResult, runSimulation } from '../../simulators/index.js';
import { launchChromium } from '../kit/chromium.js';
import { natsClient, startGateway } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * The live view in real headless Chromium: a registry-mode gateway with an operator token, a fleet of
 * 20 simulated devices (some payloads invalid), and the page must show the numbers moving.
 */
const TOKEN = 'live-view-test-token-7f3a9c21b4';
const OUTPUT_DIR = fileURLToPath(new URL('../../test-output/', import.meta.url));
const SCREENSHOT = `${OUTPUT_DIR}live-view.png`;

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let browser: Browser;
const fleet = new AbortController();
let simulation: Promise<RunResult> | undefined;

beforeAll(async () => {
  nats = await startNatsServer();
  [nc, { gateway }, browser] = await Promise.all([
    natsClient(nats.url),
    startGateway(nats.url, { AUTH_MODE: 'registry', OPERATOR_TOKEN: TOKEN }),
    launchChromium(),
  ]);
});

afterAll(async () => {
  fleet.abort();
  await simulation?.catch(() => {});
  await browser?.close();
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
});

/** The few DOM members read below: the project's TypeScript has no DOM lib. */
interface Text {
  textContent: string | null;
}
interface PageDocument {
  getElementById(id: string): Text | null;
  querySelectorAll(
    selector: string,
  ): ArrayLike<Text & { querySelectorAll(selector: string): ArrayLike<Text> }>;
  body: { dataset: Record<string, string | undefined> };
}

/** What the page shows, read the way a person would: the text of its tiles and tables. */
const readPage = (page: Page) =>
  page.evaluate(() => {
    const doc = (globalThis as unknown as { document: PageDocument }).document;
    const text = (id: string) => doc.getElementById(id)?.textContent?.trim() ?? '';
    const rows = (id: string) =>
      Array.from(doc.querySelectorAll(`#${id} tbody tr`)).map((tr) =>
        Array.from(tr.querySelectorAll('td')).map((td) => td.textContent?.trim() ?? ''),
      );
    return {
      rate: text('rate'),
      reporting: text('reporting'),
      deadletters: text('deadletters-total'),
      readings: rows('readings'),
      deadletterRows: rows('deadletters'),
      alerts: rows('alerts'),
      connection: text('conn'),
      updates: Number(doc.body.dataset.updates ?? 0),
    };
  });

async function until<T>(page: Page, check: (s: Awaited<ReturnType<typeof readPage>>) => T, what: string) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const shown = await readPage(page);
    const result = check(shown);
    if (result) return { shown, result };
    if (Date.now() > deadline) throw new Error(`the page never showed ${what}: ${JSON.stringify(shown)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('live view in Chromium', () => {
  it('shows messages/s, devices and readings changing, and dead letters by reason, while a fleet runs', async () => {
    simulation = runSimulation(
      {
        url: `mqtt://127.0.0.1:${gateway.ports.mqtt}`,
        nats: nats.url,
        devices: 20,
        rate: 2,
        duration: '20s',
        invalid: 15,
        seed: 424242,
        progress: 'none',
      },
      { signal: fleet.signal },
    );
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));

    const res = await page.goto(`http://127.0.0.1:${gateway.ports.http}/?token=${encodeURIComponent(TOKEN)}`);
    expect(res?.status()).toBe(200);

    await until(
      page,
      (s) => s.connection === 'live' && Number(s.rate.replace(/\D/g, '')) > 0,
      'messages/s above 0',
    );
    const first = await readPage(page);
    const changed = await until(
      page,
      (s) =>
        s.updates > first.updates &&
        (s.reporting !== first.reporting || JSON.stringify(s.readings) !== JSON.stringify(first.readings)),
      'the devices or readings change',
    );
    expect(changed.shown.readings.length).toBeGreaterThan(0);
    // device, tenant, type, event time, age, metrics: a row of the fleet, with its metrics.
    expect(changed.shown.readings[0]![5]).toMatch(/\d/);

    const dead = await until(
      page,
      (s) => s.deadletterRows.find((row) => /^[A-Z][A-Z_]+$/.test(row[0] ?? '') && Number(row[1]) > 0),
      'a dead-letter reason with a count',
    );
    expect(Number(dead.shown.deadletters.replace(/\D/g, ''))).toBeGreaterThan(0);

    // Alerts come from the processors on core NATS; one published here stands in for them.
    nc.publish(
      alertsSubject('acme', 'boiler-7'),
      JSON.stringify({
        tenant: 'acme',
        deviceId: 'boiler-7',
        rule: 'too-hot',
        severity: 'critical',
        state: 'firing',
        value: 92.5,
        atMs: Date.now(),
        message: 'temperature > 80 for 30s',
      }),
    );
    await until(page, (s) => s.alerts.some((row) => row.includes('too-hot')), 'the firing alert');

    // Both uPlot charts drew something.
    expect(await page.locator('.chart canvas').count()).toBe(2);
    await mkdir(OUTPUT_DIR, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(existsSync(SCREENSHOT)).toBe(true);
    expect(problems).toEqual([]);
    await page.close();

    fleet.abort();
    const run = await simulation;
    expect(run.summary.connectedDevices).toBe(20);
  }, 30_000);
});
