import type { RejectionReason } from '../../contract/rejections.js';
import type { SparkplugTopic } from '../../contract/sparkplug.js';
import { reject } from '../errors.js';
import {
  EdgeSession,
  type EdgeSessionLimits,
  type SparkplugOutcome,
  type SparkplugPresence,
} from './edge-session.js';

/**
 * The Sparkplug edge nodes of one gateway: one EdgeSession per edge node (tenant and edge node id),
 * whichever of its connections publishes, so that the will of a connection taken over is checked
 * against the NBIRTH of the new one. Pure: the broker passes each connection as an opaque token
 * (its aedes Client), compared by identity, since a reconnecting node keeps its client id.
 *
 * Bounded by the connections: a session belongs to the connection that sent its NBIRTH (or its
 * first message) and goes when that connection closes, so none outlives the node's connections.
 * An edge node is in one group: a message under another group is refused, but an NBIRTH there starts
 * the node anew in it.
 */
export class EdgeNodes {
  private readonly nodes = new Map<string, { session: EdgeSession; owner: object }>();

  constructor(
    private readonly limits: EdgeSessionLimits,
    private readonly now: () => number,
  ) {}

  get size(): number {
    return this.nodes.size;
  }

  /** The session of an edge node, for its commands (commands.ts). */
  session(tenant: string, edgeNodeId: string): EdgeSession | undefined {
    return this.nodes.get(key(tenant, edgeNodeId))?.session;
  }

  /**
   * The born sessions that have a device's DBIRTH in force, of one tenant: a command to the device goes
   * to one of them as a DCMD. A scan, bounded as the sessions are (by the connections); commands are
   * far rarer than readings.
   */
  sessionsOfDevice(tenant: string, deviceId: string): EdgeSession[] {
    const prefix = key(tenant, '');
    const found: EdgeSession[] = [];
    for (const [k, node] of this.nodes)
      if (k.startsWith(prefix) && node.session.hasDevice(deviceId)) found.push(node.session);
    return found;
  }

  /**
   * A message of an edge node on one of its Sparkplug topics. The broker has checked that the topic's
   * edge node id is the publishing device's own, and its group id (sparkplugIdProblem).
   */
  handle(
    tenant: string,
    connection: object,
    topic: Exclude<SparkplugTopic, { kind: 'state' }>,
    payload: Uint8Array,
  ): SparkplugOutcome {
    const k = key(tenant, topic.edgeNodeId);
    let node = this.nodes.get(k);
    const presence: SparkplugPresence[] = [];
    if (node !== undefined && node.session.groupId !== topic.groupId) {
      if (topic.type !== 'NBIRTH') return wrongGroup(node.session, topic);
      // Moved to another group: its devices there are gone; the node itself is born again below.
      for (const p of node.session.connectionLost()) {
        if (p.deviceId !== topic.edgeNodeId) presence.push({ ...p, cause: 'NBIRTH' });
      }
      node = undefined;
    }
    if (node === undefined) {
      node = {
        session: new EdgeSession(topic.groupId, topic.edgeNodeId, this.limits, this.now),
        owner: connection,
      };
      this.nodes.set(k, node);
    }
    if (topic.type === 'NBIRTH') node.owner = connection;
    // A will arrives from the connection that set it: after a takeover, not the NBIRTH's. Its bdSeq
    // says so too, but not every client counts bdSeq (sparkplug-client keeps it at 0).
    else if (topic.type === 'NDEATH' && node.owner !== connection) {
      return refused(
        node.session,
        topic,
        'SPARKPLUG_BDSEQ_MISMATCH',
        'NDEATH from another connection than the NBIRTH in force',
      );
    }
    const out = node.session.handle(topic, payload);
    if (presence.length > 0) out.presence = [...presence, ...out.presence];
    return out;
  }

  /**
   * A connection closed. When it owns its node's session (sent the NBIRTH in force), the node and its
   * devices go offline as for an NDEATH, unless the NDEATH came already; another connection's close
   * changes nothing.
   */
  closed(tenant: string, edgeNodeId: string, connection: object): SparkplugPresence[] {
    const k = key(tenant, edgeNodeId);
    const node = this.nodes.get(k);
    if (node === undefined || node.owner !== connection) return [];
    this.nodes.delete(k);
    return node.session.connectionLost();
  }
}

function key(tenant: string, edgeNodeId: string): string {
  return `${tenant}\u0000${edgeNodeId}`;
}

function wrongGroup(
  session: EdgeSession,
  topic: Exclude<SparkplugTopic, { kind: 'state' }>,
): SparkplugOutcome {
  const quote = (id: string) => JSON.stringify(id.slice(0, 80));
  const detail = `${topic.type} under group ${quote(topic.groupId)}, the edge node's NBIRTH is in ${quote(session.groupId)}`;
  return refused(session, topic, 'TOPIC_UNKNOWN', detail);
}

function refused(
  session: EdgeSession,
  topic: Exclude<SparkplugTopic, { kind: 'state' }>,
  reason: RejectionReason,
  detail: string,
): SparkplugOutcome {
  return {
    deviceId: topic.edgeNodeId,
    labels: session.labels,
    parsed: { batch: false, readings: [{ ...reject(reason, detail), index: undefined }] },
    rebirth: false,
    presence: [],
    skipped: {},
    limit: undefined,
  };
}
