import type { Socket } from 'node:net';
import { connectPacket, pool, rawConnect } from '../../kit/raw-mqtt.js';

/**
 * Many idle MQTT connections, in their own process so that their memory is not the gateway's:
 * opens `count` connections (client id and username `{prefix}{i}`), prints
 * `{"connected":…,"failed":…}` once all are answered, then holds them until killed.
 *
 * Usage: node --import tsx idle.ts <mqttPort> <count> <prefix>
 */
const [port, count, prefix] = process.argv.slice(2) as [string, string, string];
const held: Socket[] = [];
const ids = Array.from({ length: Number(count) }, (_, i) => `${prefix}${i}`);
const outcomes = await pool(ids, 500, (id) =>
  rawConnect(Number(port), connectPacket({ clientId: id, username: id, keepalive: 600 }), 60_000, (s) =>
    held.push(s),
  ),
);
const failed = outcomes.filter((o) => o !== 0);
console.log(
  JSON.stringify({
    connected: held.length,
    failed: failed.length,
    failures: [...new Set(failed)].slice(0, 5),
  }),
);
// Hold the connections until killed.
setInterval(() => {}, 60_000);
