import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import {
  alertsSubject,
  deadletterSubject,
  PRESENCE_STATE_BUCKET,
  type PresenceState,
  presenceStateKey,
  telemetrySubject,
} from '../../contract/index.js';
import { LiveFeed, type LiveMessage } from '../../gateway/live/live-feed.js';
import { startLiveSource } from '../../gateway/live/live-source.js';
import { LiveSummarizer, startLiveSummaries } from '../../gateway/live/live-summary.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';

/**
 * live-source.ts against a real nats-server: a gateway's summaries and alerts on core NATS, and KV
 * `presence` appearing late.
 */
let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

async function until(feed: LiveFeed, check: (m: LiveMessage) => boolean, what: string): Promise<LiveMessage> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const message = feed.delta()!.message;
    if (check(message)) return message;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(message.devices)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const state = (deviceId: string, online: boolean): PresenceState => ({
  tenant: 'acme',
  deviceId,
  online,
  reason: online ? 'connected' : 'lost',
  since: new Date().toISOString(),
  connections: [],
});

describe('live source', () => {
  it('feeds gateway summaries and alerts from NATS, and presence once its bucket exists', async () => {
    const log = createLogger('test', 'silent');
    const feed = new LiveFeed();
    const source = startLiveSource(nc, feed, log, { presenceRetryMs: 100 });
    const gateway = new LiveSummarizer({ gatewayId: 'gw-a' });
    const summaries = startLiveSummaries(nc, gateway, log, 100);
    try {
      // Core subscriptions: wait until the server has them before publishing.
      await nc.flush();
      const event = {
        id: 'x',
        tenant: 'acme',
        deviceId: 'd1',
        ts: new Date().toISOString(),
        receivedAt: new Date().toISOString(),
        schemaVersion: 1,
        labels: {},
        metrics: { temperature: { value: 21.5, unit: 'degC' } },
      };
      // What the gateway stored; its next summary carries them.
      gateway.onStored(telemetrySubject('acme', 'd1'), new TextEncoder().encode(JSON.stringify(event)));
      gateway.onStored(deadletterSubject('acme', 'PAYLOAD_NOT_JSON'), new TextEncoder().encode('{}'));
      nc.publish(
        alertsSubject('acme', 'd1'),
        JSON.stringify({
          tenant: 'acme',
          deviceId: 'd1',
          rule: 'too-hot',
          severity: 'critical',
          state: 'firing',
          value: 90,
          atMs: Date.now(),
          message: 'hot',
        }),
      );
      const fed = await until(
        feed,
        (m) => m.totals.events === 1 && m.totals.deadletters === 1 && m.alerts?.firing === 1,
        'the three messages',
      );
      expect(fed.readings![0]!.metrics).toEqual([['temperature', 21.5, 'degC']]);
      expect(fed.deadletters![0]!.reason).toBe('PAYLOAD_NOT_JSON');
      expect(fed.devices.online).toBeNull();

      // The presence owner creates its bucket later: the source finds it and replays every state.
      const kv = await new Kvm(nc).create(PRESENCE_STATE_BUCKET, { history: 1 });
      await kv.put(presenceStateKey('acme', 'd1'), JSON.stringify(state('d1', true)));
      await kv.put(presenceStateKey('acme', 'd2'), JSON.stringify(state('d2', true)));
      await until(feed, (m) => m.devices.online === 2, 'two devices online');
      await kv.put(presenceStateKey('acme', 'd2'), JSON.stringify(state('d2', false)));
      await until(feed, (m) => m.devices.online === 1, 'one device online');

      // Bucket gone: the count is unknown again, not stale.
      await (await jetstreamManager(nc)).streams.delete(`KV_${PRESENCE_STATE_BUCKET}`);
      await until(feed, (m) => m.devices.online === null, 'presence unknown');
      const again = await new Kvm(nc).create(PRESENCE_STATE_BUCKET, { history: 1 });
      await again.put(presenceStateKey('acme', 'd3'), JSON.stringify(state('d3', true)));
      await until(feed, (m) => m.devices.online === 1, 'the recreated bucket’s one device online');
    } finally {
      summaries.close();
      const started = Date.now();
      await source.close();
      expect(Date.now() - started).toBeLessThan(2_000);
    }
  });
});
