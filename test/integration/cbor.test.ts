import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { encode } from 'cbor-x';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type CanonicalEvent, TELEMETRY_STREAM, telemetryTopic } from '../../contract/index.js';
import type { Gateway } from '../../gateway/gateway.js';
import { natsClient, type ProvisionedDevice, provision, startGateway } from '../kit/gateway.js';
import { mosquittoPub } from '../kit/mqtt.js';
import { type NatsServer, startNatsServer } from '../kit/nats-server.js';
import { readStream } from '../kit/streams.js';

/**
 * CBOR payloads on `devices/{id}/telemetry/cbor`, published with the Eclipse Mosquitto client (`-f`:
 * the file's bytes as they are), are stored exactly as their JSON twins: same events, same units
 * converted, same ids (so each twin is a duplicate of the other).
 */

let nats: NatsServer;
let nc: NatsConnection;
let gateway: Gateway;
let jsonDevice: ProvisionedDevice;
let cborDevice: ProvisionedDevice;
let dir: string;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await natsClient(nats.url);
  ({ gateway } = await startGateway(nats.url, { LIVE_VIEW: 'false' }));
  jsonDevice = await provision(nc, 'twin-json', 'acme', { site: 'north' });
  cborDevice = await provision(nc, 'twin-cbor', 'acme', { site: 'north' });
  dir = await mkdtemp(join(tmpdir(), 'cbor-test-'));
});

afterAll(async () => {
  await gateway?.close();
  await nc?.close();
  await nats?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function publishCbor(device: ProvisionedDevice, value: unknown, name: string): Promise<void> {
  const file = join(dir, `${name}.cbor`);
  await writeFile(file, encode(value));
  await mosquittoPub(gateway.ports.mqtt, device, telemetryTopic(device.id, 'cbor'), { file });
}

/** A device's events without what differs between twins from two devices. */
async function eventsOf(deviceId: string) {
  return (await readStream<CanonicalEvent>(nc, TELEMETRY_STREAM))
    .filter((m) => m.data.deviceId === deviceId)
    .map(({ data: { id, deviceId: _device, receivedAt: _received, ...rest } }) => ({
      id: id.replace(deviceId, '{device}'),
      ...rest,
    }));
}

it('stores a CBOR payload, single or batch, version 1 or 2, exactly as its JSON twin', async () => {
  const ts = Date.now() - 60_000;
  const payloads = [
    { ts, seq: 1, metrics: { temperature: 21.5, door: true } },
    [
      {
        v: 2,
        ts: new Date(ts + 1_000).toISOString(),
        seq: 2,
        metrics: { temperature: { value: 70.1, unit: 'degF' } },
      },
      {
        v: 2,
        ts: ts + 2_000,
        seq: 3,
        metrics: { pressure: { value: 14.7, unit: 'psi' }, humidity: { value: 40 } },
      },
    ],
  ];
  for (const [i, payload] of payloads.entries()) {
    await mosquittoPub(
      gateway.ports.mqtt,
      jsonDevice,
      telemetryTopic(jsonDevice.id),
      JSON.stringify(payload),
    );
    await publishCbor(cborDevice, payload, `twin-${i}`);
  }
  const fromJson = await eventsOf(jsonDevice.id);
  expect(fromJson).toHaveLength(3);
  expect(await eventsOf(cborDevice.id)).toEqual(fromJson);
  expect(fromJson[1]!.metrics.temperature).toMatchObject({ unit: 'degC', originalUnit: 'degF' });
});

it('takes CBOR’s own date-time as ts, and a CBOR reading and its JSON twin as one event', async () => {
  const ts = Date.UTC(2026, 0, 1) + Math.floor((Date.now() - Date.UTC(2026, 0, 1)) / 1_000) * 1_000 - 30_000;
  await publishCbor(cborDevice, { ts: new Date(ts), seq: 9, metrics: { temperature: 19 } }, 'dated');
  // The same reading again, as JSON: the same event id, so JetStream keeps the first only.
  await mosquittoPub(
    gateway.ports.mqtt,
    cborDevice,
    telemetryTopic(cborDevice.id),
    JSON.stringify({ ts, seq: 9, metrics: { temperature: 19 } }),
  );
  const dated = (await eventsOf(cborDevice.id)).filter((e) => e.seq === 9);
  expect(dated).toEqual([expect.objectContaining({ ts: new Date(ts).toISOString() })]);
});
