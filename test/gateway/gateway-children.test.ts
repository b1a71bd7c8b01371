import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceRecord } from '../../contract/devices.js';
import { GatewayChildren } from '../../gateway/broker/gateway-children.js';
import { deviceIdentity } from '../../gateway/ingest/telemetry-handler.js';
import { DeviceRegistry, openRegistryBucket } from '../../gateway/registry/device-registry.js';
import { RegistryCache } from '../../gateway/registry/registry-cache.js';
import { natsClient } from '../kit/gateway.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { limitCount, log, metrics } from './broker/fixtures.js';

/**
 * Which devices a gateway device speaks for, against a real registry bucket: children registered on
 * first sight (create-if-absent, so two gateways racing agree), the bound per gateway device, and
 * every device it may never speak for.
 */

let nats: NatsServer;
let nc: NatsConnection;
let kv: KV;
let admin: DeviceRegistry;
const caches: RegistryCache[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  kv = await openRegistryBucket(nc);
  admin = new DeviceRegistry(kv);
  await admin.add({ id: 'site-1', tenant: 'acme', gateway: { children: 'any' } });
  await admin.add({ id: 'site-2', tenant: 'acme', gateway: { children: 'any' } });
  await admin.add({ id: 'site-3', tenant: 'acme', gateway: { children: ['listed-1', 'direct-2'] } });
  await admin.add({ id: 'direct-1', tenant: 'acme' });
  await admin.add({ id: 'direct-2', tenant: 'acme' });
  await admin.add({ id: 'other-1', tenant: 'other' });
});

afterAll(async () => {
  for (const cache of caches) cache.stop();
  await nc?.close();
  await nats?.dispose();
});

/** One gateway's view: its own registry cache over the shared bucket. */
async function gatewayView(maxChildren = 100) {
  const cache = new RegistryCache(kv, log, () => {});
  await cache.start();
  caches.push(cache);
  const m = metrics();
  const children = new GatewayChildren({
    registry: cache,
    register: (id, tenant, via) => admin.addChild(id, tenant, via),
    lookup: (id) => admin.get(id),
    maxChildren,
    metrics: m,
    log,
  });
  return { cache, children, m };
}

const identityOf = (r: DeviceRecord) => deviceIdentity(r.id, r.tenant, r.labels, r.gateway);
const site = async (id: string) => identityOf((await admin.get(id))!);

describe('GatewayChildren', () => {
  it('registers a new child through the gateway device, without a secret, and knows it at once after', async () => {
    const { children, cache } = await gatewayView();
    const first = await children.resolve(await site('site-1'), 'meter-a');
    expect(first).toMatchObject({
      ok: true,
      identity: { deviceId: 'meter-a', tenant: 'acme', labels: { via: 'site-1' } },
    });
    expect(await admin.get('meter-a')).toMatchObject({
      tenant: 'acme',
      secretHash: '',
      labels: { via: 'site-1' },
    });
    // Decided without waiting, before the watch even brought the record.
    expect(children.resolve(await site('site-1'), 'meter-a')).toMatchObject({ ok: true });
    expect(cache.childrenVia('site-1')).toBe(1);
    expect(children.speaksFor('site-1', 'meter-a')).toBe(true);
    expect(children.speaksFor('site-2', 'meter-a')).toBe(false);
    expect(children.isGateway('site-1')).toBe(true);
    expect(children.isGateway('direct-1')).toBe(false);
  });

  it('lets two gateways racing for one new child agree: the first gateway device gets it', async () => {
    const [a, b] = await Promise.all([gatewayView(), gatewayView()]);
    const [one, two] = await Promise.all([
      a.children.resolve(await site('site-1'), 'meter-race'),
      b.children.resolve(await site('site-2'), 'meter-race'),
    ]);
    const record = (await admin.get('meter-race'))!;
    const winner = record.labels.via;
    expect(['site-1', 'site-2']).toContain(winner);
    expect([one.ok, two.ok].filter(Boolean)).toHaveLength(1);
    expect((winner === 'site-1' ? one : two).ok).toBe(true);
    expect(winner === 'site-1' ? two : one).toEqual({ ok: false, reason: 'CHILD_DENIED' });
  });

  it.each([
    ['a direct device', 'site-1', 'direct-1'],
    ["another tenant's device", 'site-1', 'other-1'],
    ['itself', 'site-1', 'site-1'],
    ['another gateway device', 'site-1', 'site-2'],
    ['a device not in its list', 'site-3', 'meter-new'],
  ])('never speaks for %s', async (_what, gateway, device) => {
    const { children } = await gatewayView();
    expect(await children.resolve(await site(gateway), device)).toEqual({
      ok: false,
      reason: 'CHILD_DENIED',
    });
    expect((await admin.get(device))?.labels.via).toBeUndefined();
  });

  it('speaks for the devices listed, registered or not, and for no disabled child', async () => {
    const { children } = await gatewayView();
    expect(await children.resolve(await site('site-3'), 'listed-1')).toMatchObject({ ok: true });
    expect(await children.resolve(await site('site-3'), 'direct-2')).toMatchObject({ ok: true }); // listed on purpose
    await admin.setDisabled('listed-1', true);
    const later = await gatewayView();
    expect(await later.children.resolve(await site('site-3'), 'listed-1')).toEqual({
      ok: false,
      reason: 'CHILD_DENIED',
    });
  });

  it('registers at most GATEWAY_DEVICE_MAX_CHILDREN children through one gateway device, counted', async () => {
    await admin.add({ id: 'site-9', tenant: 'acme', gateway: { children: 'any' } });
    const { children, m } = await gatewayView(2);
    const gateway = await site('site-9');
    const results = await Promise.all(['c-1', 'c-2', 'c-3'].map((c) => children.resolve(gateway, c)));
    expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'ok', 'CHILD_LIMIT']);
    expect(await admin.get('c-3')).toBeUndefined();
    expect(await limitCount(m, 'GATEWAY_DEVICE_MAX_CHILDREN')).toBe(1);
    // Those registered still pass.
    expect(children.resolve(gateway, 'c-1')).toMatchObject({ ok: true });
  });
});
