import { rmSync } from 'node:fs';
import { AckPolicy, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { type NatsServer, type NatsServerOptions, startNatsServer } from '../test/kit/nats-server.js';
import { killQuietly } from './child-process.js';
import { hold } from './lifecycle.js';
import { touch } from './mqtt-load.js';

/** A nats-server for a bench: stopped, and its store deleted, however the bench ends. */
export async function heldNatsServer(options: NatsServerOptions): Promise<NatsServer> {
  const server = await startNatsServer(options);
  hold(
    `nats-server ${options.serverName ?? ''}`.trim(),
    () => server.dispose(),
    () => {
      killQuietly(server.pid);
      rmSync(server.storeDir, { recursive: true, force: true });
    },
  );
  return server;
}

/** A NATS connection closed however the bench ends. */
export async function heldNatsConnection(url: string, name: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, name });
  hold(
    `nats connection ${name}`,
    () => nc.close(),
    () => {},
  );
  return nc;
}

/** The stream nats-server's MQTT listener stores QoS 1 messages in. */
export const MQTT_MSGS_STREAM = '$MQTT_msgs';

/**
 * nats-server with its own MQTT listener, the peer the gateway is measured against, and a connection
 * to it. What nats-server 2.9.10 does with a QoS 1 PUBLISH (server/mqtt.go, mqttProcessPub): it sends
 * it to JetStream stream `$MQTT_msgs` as a request and waits for the answer in the connection's read
 * loop, so the PUBACK follows a successful store. But `$MQTT_msgs` has interest retention: while no
 * consumer exists, JetStream answers without storing anything. With `interest` (the fair peer) a
 * durable consumer that nobody reads is attached, so nats-server stores every message as TELEMETRY
 * does.
 */
export async function heldMqttListener(
  serverName: string,
  o: { interest: boolean; connectTimeoutMs: number },
): Promise<{ server: NatsServer; mqttPort: number; nc: NatsConnection }> {
  const server = await heldNatsServer({ serverName, extraConfig: 'mqtt { host: 127.0.0.1, port: -1 }' });
  if (server.mqttPort === undefined) throw new Error('nats-server did not report an MQTT listener');
  const nc = await heldNatsConnection(server.url, `${serverName} interest`);
  // The $MQTT_* streams appear with the account's first MQTT client.
  await touch(
    '127.0.0.1',
    server.mqttPort,
    { id: 'bench-setup', username: undefined, password: undefined, nextSeq: 0 },
    o.connectTimeoutMs,
  );
  if (o.interest) {
    await (await jetstreamManager(nc)).consumers.add(MQTT_MSGS_STREAM, {
      durable_name: 'bench-interest',
      ack_policy: AckPolicy.Explicit,
      filter_subject: '$MQTT.msgs.>',
    });
  }
  return { server, mqttPort: server.mqttPort, nc };
}
