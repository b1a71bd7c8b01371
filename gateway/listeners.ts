import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { closeServer, listen, stopAccepting } from '../common/listen.js';
import type { Logger } from '../common/logger.js';
import type { DeviceBroker } from './broker/device-broker.js';
import type { GatewayConfig } from './config.js';
import type { ConnectDeadlines } from './limits/connect-deadline.js';
import { openFilesLimit } from './limits/open-files.js';

/**
 * Connections the kernel may queue before the gateway accepts them: a fleet reconnecting at once (or
 * a CONNECT storm) overflows Node's default of 511, and the overflow waits out SYN retransmits of
 * 1, 3, 7… s or is reset. Linux caps it at net.core.somaxconn (4096 on current kernels).
 */
const MQTT_LISTEN_BACKLOG = 4096;
/** File descriptors left for NATS, the HTTP server, logs and files when every listener is full. */
const FD_RESERVE = 1024;
/** A listener refusing sockets says so at most this often; the count is in the metric. */
const DROP_WARN_INTERVAL_MS = 60_000;

export interface ListenerPolicy {
  /** Started for every accepted socket; stopped by the broker when the CONNECT arrives. */
  deadlines: ConnectDeadlines;
  /** A socket was refused because its listener holds MAX_CONNECTIONS. */
  dropped: (listener: string) => void;
  log: Logger;
}

export interface MqttListeners {
  mqtt: number;
  ws: number;
  mqtts: number | undefined;
  /** Stops accepting connections; established ones stay until the broker closes them. */
  close(): Promise<void>;
}

/** MQTT over TCP, over WebSocket (browsers, gateways behind HTTP proxies) and over TLS when configured. */
export async function startListeners(
  config: GatewayConfig,
  broker: DeviceBroker,
  policy: ListenerPolicy,
): Promise<MqttListeners> {
  const servers: Server[] = [];
  const started = async (server: Server, port: number, what: string) => {
    bounded(server, what, config, policy);
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
    warnIfFewFiles(servers.length, config.MAX_CONNECTIONS, policy.log);
    return { mqtt, ws, mqtts, close: () => Promise.all(servers.map(stopAccepting)).then(() => undefined) };
  } catch (err) {
    await Promise.all(servers.map(closeServer));
    throw err;
  }
}

/**
 * At most MAX_CONNECTIONS sockets per listener (Node closes the ones beyond at accept and emits
 * 'drop'), and a CONNECT_TIMEOUT_MS clock on each from accept: on the TLS listener that includes the
 * handshake, on the WebSocket one the HTTP upgrade, which neither aedes nor Node bound otherwise.
 */
function bounded(server: Server, what: string, config: GatewayConfig, policy: ListenerPolicy): void {
  server.maxConnections = config.MAX_CONNECTIONS;
  let lastWarnMs = 0;
  server.on('drop', () => {
    policy.dropped(what);
    const now = Date.now();
    if (now - lastWarnMs < DROP_WARN_INTERVAL_MS) return;
    lastWarnMs = now;
    policy.log.warn(
      { listener: what, maxConnections: config.MAX_CONNECTIONS },
      'listener full: refusing new sockets (MAX_CONNECTIONS)',
    );
  });
  // The raw socket, before TLS, HTTP or aedes see it: its clock is the first timer, so it ends first.
  server.prependListener('connection', (socket: Socket) => policy.deadlines.arm(socket, what));
}

function warnIfFewFiles(listeners: number, maxConnections: number, log: Logger): void {
  const limit = openFilesLimit();
  const needed = listeners * maxConnections + FD_RESERVE;
  if (limit !== undefined && limit < needed)
    log.warn(
      { openFilesLimit: limit, listeners, maxConnections, reserve: FD_RESERVE },
      'MAX_CONNECTIONS on every listener would take more file descriptors than the process may open: ' +
        'lower MAX_CONNECTIONS or raise the limit (ulimit -n, LimitNOFILE, docker --ulimit nofile)',
    );
}
