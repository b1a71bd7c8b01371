import type { Socket } from 'node:net';
import { generate } from 'mqtt-packet';
import { connectPacket, rawConnect } from '../../kit/raw-mqtt.js';

/**
 * An abusive device, in its own process so that its work does not slow the clients being measured:
 * publishes QoS 0 telemetry as fast as the socket takes it, reconnects whenever it is cut off.
 * Every second it prints `{"written":…,"connections":…,"refused":…}`.
 *
 * Usage: node --import tsx flood.ts <mqttPort> <deviceId> <secret>
 */
const [port, deviceId, secret] = process.argv.slice(2) as [string, string, string];
const publish = generate({
  cmd: 'publish',
  topic: `devices/${deviceId}/telemetry`,
  payload: Buffer.from('{"metrics":{"flood":1}}'),
  qos: 0,
  retain: false,
  dup: false,
});
const chunk = Buffer.concat(Array(100).fill(publish));
let written = 0;
let connections = 0;
let refused = 0;

async function flood(): Promise<void> {
  for (;;) {
    let socket: Socket | undefined;
    const outcome = await rawConnect(
      Number(port),
      connectPacket({ clientId: `${deviceId}:flood`, username: deviceId, password: secret, keepalive: 60 }),
      10_000,
      (s) => {
        socket = s;
      },
    );
    if (outcome !== 0 || socket === undefined) {
      refused++;
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    connections++;
    const s = socket;
    await new Promise<void>((resolve) => {
      s.once('close', () => resolve());
      const pump = () => {
        while (!s.destroyed) {
          written += 100;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    await new Promise((r) => setTimeout(r, 100));
  }
}

setInterval(() => console.log(JSON.stringify({ written, connections, refused })), 1_000);
void flood();
