import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { launchChromium } from '../kit/chromium.js';
import { freePort } from '../kit/processes.js';

/**
 * A newcomer's first `npm start`, in a real terminal (a tmux pane, so that stdout is a TTY): the logs
 * are readable lines, not JSON, and the live view shows an alert firing within two minutes, from the
 * demo fleet's own episodes and the demo's alert rules, read in headless Chromium as a person would.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const READY_TIMEOUT_MS = 60_000;
/** The promise: an alert within two minutes of the start. */
const ALERT_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 40_000;
const SESSION = 'first-run';
const socket = `first-run-${process.pid}`;

const exec = promisify(execFile);
const tmux = (...args: string[]) => exec('tmux', ['-L', socket, ...args], { timeout: 10_000 });
/** The pane's text, wrapped lines joined, its whole history. */
const pane = async () => (await tmux('capture-pane', '-p', '-J', '-S', '-5000', '-t', SESSION)).stdout;

let dataDir: string;
let browser: Browser | undefined;
let running = false;

async function waitForPane(text: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const shown = await pane();
    if (shown.includes(text)) return shown;
    if (Date.now() > deadline) throw new Error(`no '${text}' within ${timeoutMs} ms:\n${shown}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'first-run-'));
  const env: Record<string, string> = {
    NATS_PORT: String(await freePort()),
    VICTORIA_METRICS_PORT: String(await freePort()),
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: String(await freePort()),
    HTTP_PORT: String(await freePort()),
    HTTP_INGEST_PORT: String(await freePort()),
    PROCESSORS_HTTP_PORT: String(await freePort()),
    BIND_HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    // What a newcomer's shell has: none of the settings a test run may carry.
    NATS_URL: '',
    INFLUX_URL: '',
    CONFIG_FILE: '',
    AUTH_MODE: '',
    LOG_LEVEL: '',
    LOG_FORMAT: '',
    ALERT_RULES_FILE: '',
  };
  const vars = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
  await tmux('new-session', '-d', '-s', SESSION, '-x', '220', '-y', '60', '-c', ROOT, ...vars, 'npm start');
  running = true;
  // Keep the pane once npm exits, so that its last words can be read.
  await tmux('set-option', '-t', SESSION, 'remain-on-exit', 'on');
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  if (running) {
    // Ctrl-C, as a person would; the supervisor stops its children by pid.
    await tmux('send-keys', '-t', SESSION, 'C-c').catch(() => undefined);
    await waitForPane('start: stopped', STOP_TIMEOUT_MS).catch(() => undefined);
  }
  await tmux('kill-server').catch(() => undefined);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

it(
  'shows readable logs in a terminal, and an alert firing in the live view within two minutes',
  async () => {
    const started = Date.now();
    const shown = await waitForPane('start: ready', READY_TIMEOUT_MS);
    const lines = shown.split('\n');
    // One readable line per log entry, from both services: time, level, who, what.
    const readable = lines.filter((l) =>
      /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR): (gateway|processors): /.test(l),
    );
    expect(readable.filter((l) => l.includes(' gateway: ')).length).toBeGreaterThan(0);
    expect(readable.filter((l) => l.includes(' processors: ')).length).toBeGreaterThan(0);
    expect(lines.filter((l) => l.trimStart().startsWith('{"level"'))).toEqual([]);
    // Fewer lines than a screen before the banner.
    expect(lines.findIndex((l) => l.startsWith('start: ready'))).toBeLessThan(50);
    expect(shown).toContain('alert rules   scripts/demo-alert-rules.yaml');

    const liveUrl = /live view\s+(\S+)/.exec(shown)?.[1];
    expect(liveUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{32}$/);
    const page = await browser!.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    expect((await page.goto(liveUrl!))?.status()).toBe(200);
    const firing = async () =>
      page.evaluate(() => {
        const doc = (
          globalThis as unknown as {
            document: { querySelectorAll(s: string): ArrayLike<{ textContent: string | null }> };
          }
        ).document;
        return Array.from(doc.querySelectorAll('#alerts tbody tr')).map((tr) => tr.textContent ?? '');
      });
    let rows: string[] = [];
    while (Date.now() - started < ALERT_TIMEOUT_MS) {
      rows = await firing();
      if (rows.some((row) => /overheating|silent/.test(row))) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(
      rows.some((row) => /overheating|silent/.test(row)),
      (await pane()).slice(-3_000),
    ).toBe(true);
    expect(problems).toEqual([]);
    // The alert was logged in the pane too, readably.
    expect(await pane()).toMatch(/INFO: processors: alert \{"alert":"(overheating|silent)"/);
    await page.close();
  },
  READY_TIMEOUT_MS + ALERT_TIMEOUT_MS + 30_000,
);
