import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type Server } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { closeServer, listen } from '../common/listen.js';
import type { DeviceBroker } from './broker.js';
import type { GatewayConfig } from './config.js';

/**
 * Connections the kernel may queue before the gateway accepts them: a fleet reconnecting at once (or
 * a CONNECT storm) overflows Node's default of 511, and the overflow waits out SYN retransmits of
 * 1, 3, 7… s or is reset. Linux caps it at net.core.somaxconn (4096 on current kernels).
 */
const MQTT_LISTEN_BACKLOG = 4096;

export interface MqttListeners {
  mqtt: number;
  ws: number;
  mqtts: number | undefined;
  /** Stops accepting connections; established ones stay until the broker closes them. */
  close(): Promise<void>;
}

/** MQTT over TCP, over WebSocket (browsers, gateways behind HTTP proxies) and over TLS when configured. */
export async function startListeners(config: GatewayConfig, broker: DeviceBroker): Promise<MqttListeners> {
  const servers: Server[] = [];
  const started = async (server: Server, port: number, what: string) => {
    const bound = await listen(server, port, config.BIND_HOST, what, MQTT_LISTEN_BACKLOG);
    servers.push(server);
    return bound;
  };
  try {
    const tcp = createNetServer((socket) => broker.handle(socket));
    const mqtt = await started(tcp, config.MQTT_PORT, 'MQTT_PORT');

    const http = createHttpServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket only\n');
    });
    const wss = new WebSocketServer({ server: http, maxPayload: config.MAX_PACKET_BYTES });
    wss.on('connection', (socket, req) => broker.handle(createWebSocketStream(socket), req));
    const ws = await started(http, config.MQTT_WS_PORT, 'MQTT_WS_PORT');

    let mqtts: number | undefined;
    if (config.MQTTS_PORT !== undefined && config.TLS_CERT_FILE && config.TLS_KEY_FILE) {
      const tls = createTlsServer(
        {
          cert: readFileSync(config.TLS_CERT_FILE),
          key: readFileSync(config.TLS_KEY_FILE),
          minVersion: 'TLSv1.2',
        },
        (socket) => broker.handle(socket),
      );
      mqtts = await started(tls, config.MQTTS_PORT, 'MQTTS_PORT');
    }
    return { mqtt, ws, mqtts, close: () => Promise.all(servers.map(closeServer)).then(() => undefined) };
  } catch (err) {
    await Promise.all(servers.map(closeServer));
    throw err;
  }
}
