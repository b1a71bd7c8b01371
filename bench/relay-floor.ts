import { createServer, type Socket } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import mqttPacket from 'mqtt-packet';
import { createLogger } from '../common/logger.js';
import { telemetrySubject } from '../contract/subjects.js';
import { parseDeviceTopic } from '../contract/topics.js';
import { pubackBytes } from '../gateway/broker/aedes-internals.js';
import {
  DEFAULT_ACK_TIMEOUT_MS,
  DEFAULT_DEDUP_WINDOW_MS,
  DEFAULT_TELEMETRY_MAX_AGE_MS,
} from '../gateway/config.js';
import { JetStreamPublisher } from '../gateway/jetstream-publisher.js';
import { ensureStreams } from '../gateway/streams.js';

/**
 * The floor under any MQTT front end written in Node with the gateway's NATS hop: a relay that does
 * nothing a gateway must do (no authentication, no validation, no canonical event, no limits, no
 * sessions, no metrics) and only what every such front end cannot avoid. Per connection it parses
 * MQTT with mqtt-packet (aedes' parser), answers CONNECT and PINGREQ, publishes each QoS 1 PUBLISH's
 * payload as it came to its device's TELEMETRY subject through the gateway's JetStreamPublisher (a
 * `Nats-Msg-Id` each, the gateway's stream settings), and writes the PUBACK in one 4-byte write once
 * JetStream stored it. With RELAY_MODE=echo it does not publish at all: the PUBACK goes out at once,
 * and what is measured is Node's socket handling and the MQTT parse alone.
 *
 * bench:ingest runs it as a target (`--targets relay,echo`) beside the gateway and nats-server's
 * listener, so that the distance between the gateway and the listener can be split into what the
 * gateway's own work costs and what a Node front end with a second hop costs whatever it does. It is
 * a measuring instrument, not a product: it accepts anyone and stores raw payloads.
 *
 * Environment: MQTT_PORT, NATS_URL (relay only), RELAY_MODE (relay | echo). Prints `ready` once
 * listening.
 */
const mode = process.env.RELAY_MODE === 'echo' ? 'echo' : 'relay';
const port = Number(process.env.MQTT_PORT);
const log = createLogger('relay-floor', 'warn');

const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const PINGRESP = Buffer.from([0xd0, 0x00]);
const TENANT = 'relay';

/** The gateway's own PUBACK write (one 4-byte write), so that both pay the same for it. */
function puback(socket: Socket, messageId: number): void {
  if (!socket.destroyed) socket.write(pubackBytes(messageId));
}

let publisher: JetStreamPublisher | undefined;
if (mode === 'relay') {
  const nc = await connect({ servers: process.env.NATS_URL, name: 'relay-floor' });
  await ensureStreams(
    await jetstreamManager(nc),
    { telemetryMaxAgeMs: DEFAULT_TELEMETRY_MAX_AGE_MS, dedupWindowMs: DEFAULT_DEDUP_WINDOW_MS, replicas: 1 },
    log,
  );
  publisher = new JetStreamPublisher(nc, { ackTimeoutMs: DEFAULT_ACK_TIMEOUT_MS, log });
}

let published = 0;
const server = createServer((socket) => {
  socket.setNoDelay(true);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  socket.on('data', (chunk) => parser.parse(chunk));
  socket.on('error', () => socket.destroy());
  parser.on('error', () => socket.destroy());
  parser.on('packet', (packet) => {
    switch (packet.cmd) {
      case 'connect':
        socket.write(CONNACK);
        return;
      case 'pingreq':
        socket.write(PINGRESP);
        return;
      case 'disconnect':
        socket.end();
        return;
      case 'publish': {
        if (packet.qos !== 1 || packet.messageId === undefined) return;
        const messageId = packet.messageId;
        const topic = parseDeviceTopic(packet.topic);
        if (publisher === undefined || topic === undefined) {
          puback(socket, messageId);
          return;
        }
        publisher.publish(
          telemetrySubject(TENANT, topic.deviceId),
          packet.payload as Buffer,
          `${TENANT}.${topic.deviceId}.${++published}`,
          () => !socket.destroyed,
          (err) => {
            if (err === undefined) puback(socket, messageId);
          },
        );
        return;
      }
      default:
        return;
    }
  });
});
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.once('SIGTERM', () => process.exit(0));
