import type { Client, PublishPacket } from 'aedes';
import { parseSparkplugTopic, SPARKPLUG_NAMESPACE, sparkplugIdProblem } from '../../contract/sparkplug.js';
import type { HandledCallback } from '../ingest/telemetry-handler.js';
import { type DeviceIdentity, deviceIdentity, type TelemetryHandler } from '../ingest/telemetry-handler.js';
import { rebirthCommand, type SparkplugCommand } from '../sparkplug/commands.js';
import type { EdgeNodes } from '../sparkplug/edge-nodes.js';
import type { SparkplugOutcome, SparkplugPresence } from '../sparkplug/edge-session.js';
import { childRefused, incoming, type PublishDeps, resolveChild } from './authorize-publish.js';
import type { Done } from './flow-control.js';

export interface SparkplugPublishDeps {
  edgeNodes: Pick<EdgeNodes, 'handle' | 'session'>;
  telemetry: Pick<TelemetryHandler, 'handleParsed' | 'rejectMessage'>;
  /** Publishes a command to an edge node, QoS 0 and not retained [tck-id-topics-ncmd-mqtt]. */
  send(command: SparkplugCommand): void;
  now: () => number;
}

export function isSparkplugTopic(topic: string): boolean {
  return topic.startsWith(`${SPARKPLUG_NAMESPACE}/`);
}

/**
 * A gateway device publishing as a Sparkplug B edge node (README, Sparkplug B), or false when it may
 * not: only under its own edge node id, in a usable group, and none of the host's topics (NCMD, DCMD,
 * STATE); the caller refuses those as any ACL violation. The {device} id is not checked here: the
 * message still counts in the node's seq, and the session dead-letters a bad id.
 *
 * The edge node's session is fed at once, in the order aedes authorises the connection's publishes
 * (its will included, which aedes authorises before it reports the close), then the readings go
 * through the budgets and the ingest of the device they belong to: the edge node's own for node
 * messages, a Sparkplug device's, as a child of the edge node's gateway device, for device messages.
 */
export function forSparkplug(
  deps: PublishDeps,
  sp: SparkplugPublishDeps,
  client: Client,
  edge: DeviceIdentity,
  packet: PublishPacket,
  done: Done,
): boolean {
  const topic = parseSparkplugTopic(packet.topic);
  if (
    topic === undefined ||
    topic.kind === 'state' ||
    topic.type === 'NCMD' ||
    topic.type === 'DCMD' ||
    topic.edgeNodeId !== edge.deviceId ||
    sparkplugIdProblem('group', topic.groupId) !== undefined ||
    deps.children === undefined
  )
    return false;
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const out = sp.edgeNodes.handle(edge.tenant, client, topic, payload);
  const { metrics } = deps;
  if (out.limit !== undefined) metrics.limitReached(out.limit);
  for (const [reason, n] of Object.entries(out.skipped)) metrics.sparkplugSkipped(reason, n);
  if (out.rebirth) {
    metrics.sparkplugRebirth();
    sp.send(rebirthCommand(topic.groupId, topic.edgeNodeId, sp.now()));
  }
  const online: SparkplugPresence[] = [];
  for (const p of out.presence) {
    if (topic.kind === 'node' && p.deviceId === edge.deviceId) nodePresence(deps, client, edge, p);
    else if (p.online) online.push(p);
    // A lost connection's devices go with it (connections.ts, disconnected).
    else if (p.cause !== 'connection lost')
      deps.connections.childGone(client, p.deviceId, `Sparkplug ${p.cause}`);
  }
  const labelled = (who: DeviceIdentity) =>
    deviceIdentity(who.deviceId, who.tenant, { ...who.labels, ...out.labels });
  // A device message with a usable device id is the device's, even one named as its edge node (which
  // resolveChild refuses); any other is the edge node's.
  if (topic.kind === 'node' || out.deviceId !== topic.deviceId) {
    store(deps, sp, client, labelled(edge), out, packet, done);
    return true;
  }
  resolveChild(deps, client, edge, out.deviceId, packet, done, (verdict) => {
    if (!verdict.ok) {
      const rejection = childRefused(deps, client, out.deviceId, verdict, packet);
      const refused = { ...out, parsed: { batch: false, readings: [{ ...rejection, index: undefined }] } };
      store(deps, sp, client, labelled(edge), refused, packet, done);
      return;
    }
    const device = labelled(verdict.identity);
    // Online as the session has it now: a registration awaited may have let its DDEATH (or a new
    // NBIRTH) through first, and that death was told already.
    if (online.length > 0 && sp.edgeNodes.session(edge.tenant, edge.deviceId)?.hasDevice(device.deviceId))
      deps.connections.childSeen(client, device);
    store(deps, sp, client, device, out, packet, done);
  });
  return true;
}

/** The outcome's readings and rejections, once the device's budgets allow: stored as a JSON device's. */
function store(
  deps: PublishDeps,
  sp: SparkplugPublishDeps,
  client: Client,
  identity: DeviceIdentity,
  out: SparkplugOutcome,
  packet: PublishPacket,
  done: Done,
): void {
  deps.budgets.admit(
    client,
    identity.deviceId,
    packet,
    (reason) => deps.connections.markLost(client, reason),
    () => {
      const { msg, wanted, finish } = incoming(deps, client, packet, 'json', done);
      // A death, or a birth of controls only: nothing to store, nothing to wait for.
      if (out.parsed.readings.length === 0) finish();
      else sp.telemetry.handleParsed(identity, msg, out.parsed, wanted, finish as HandledCallback);
    },
    done,
  );
}

/**
 * The edge node's own birth and death. Its connection is its presence (`connected`, then `lost` or
 * `disconnected`); a birth or death while it stays connected is a `status` event of the node.
 */
function nodePresence(deps: PublishDeps, client: Client, edge: DeviceIdentity, p: SparkplugPresence): void {
  if (p.cause === 'connection lost') return;
  const status = { sparkplug: p.cause, online: p.online };
  deps.presence.publish({
    tenant: edge.tenant,
    deviceId: edge.deviceId,
    clientId: client.id,
    type: 'status',
    status,
    statusEncoding: 'json',
    statusBytes: Buffer.byteLength(JSON.stringify(status)),
    statusTruncated: false,
  });
}
