import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { ProvisionedDevice } from './gateway.js';

const run = promisify(execFile);

/** A real mqtt.js client for a provisioned device; no automatic reconnect, so refusals surface. */
export function connectDevice(
  port: number,
  device: Pick<ProvisionedDevice, 'id' | 'secret'>,
  options: IClientOptions = {},
): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId: device.id,
    username: device.id,
    password: device.secret,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
}

/** The CONNACK refusal of a connection attempt, or 'accepted'. */
export async function connectOutcome(port: number, options: IClientOptions): Promise<number | 'accepted'> {
  try {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      ...options,
    });
    await client.endAsync();
    return 'accepted';
  } catch (err) {
    const code = (err as { code?: number }).code;
    if (typeof code === 'number') return code;
    throw err;
  }
}

/** Resolves when the broker closes the client's connection. */
export function closedByBroker(client: MqttClient, timeoutMs = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve();
    const timer = setTimeout(() => reject(new Error('connection was not closed')), timeoutMs);
    client.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Publishes with the Eclipse Mosquitto command-line client, a third-party MQTT implementation. */
export async function mosquittoPub(
  port: number,
  device: Pick<ProvisionedDevice, 'id' | 'secret'>,
  topic: string,
  /** The message, or `{ file }`: mosquitto_pub's `-f`, the file's bytes as they are (binary payloads). */
  message: string | { file: string },
  qos: 0 | 1 | 2 = 1,
  /** mosquitto_pub's `-V`: mqttv31, mqttv311 (its default) or mqttv5. */
  version = 'mqttv311',
): Promise<void> {
  await run(
    'mosquitto_pub',
    [
      '-V',
      version,
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-i',
      device.id,
      '-u',
      device.id,
      '-P',
      device.secret,
      '-q',
      String(qos),
      '-t',
      topic,
      ...(typeof message === 'string' ? ['-m', message] : ['-f', message.file]),
    ],
    { timeout: 10_000 },
  );
}

/** Debian's python3, which has python3-paho-mqtt (a pyenv python3 earlier on PATH would not). */
const DEBIAN_PYTHON = '/usr/bin/python3';

/**
 * Publishes each payload with Eclipse paho-mqtt, a new client object (so a new connection starting at
 * packet id 1) per payload. Resolves with each message's packet id and whether it was acknowledged.
 */
export async function pahoPublishEach(
  port: number,
  device: Pick<ProvisionedDevice, 'id' | 'secret'>,
  topic: string,
  payloads: string[],
  qos: 0 | 1 | 2 = 1,
): Promise<{ mid: number; published: boolean }[]> {
  const script = new URL('./paho/publish.py', import.meta.url).pathname;
  const { stdout } = await run(
    DEBIAN_PYTHON,
    [script, String(port), device.id, device.id, device.secret, topic, String(qos), ...payloads],
    { timeout: 30_000 },
  );
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { mid: number; published: boolean });
}
