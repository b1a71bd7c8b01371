import type { Client } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { AclDeniedError } from '../errors.js';
import type { GatewayMetrics } from '../metrics.js';

/** Counts and logs a publish or subscription outside the client's own device, and says so as an error. */
export function aclDenied(
  deps: { metrics: Pick<GatewayMetrics, 'aclDenied'>; log: Logger },
  client: Pick<Client, 'id'>,
  action: 'publish' | 'subscribe',
  topic: string,
): AclDeniedError {
  deps.metrics.aclDenied.labels(action).inc();
  deps.log.warn({ clientId: client.id, action, topic: topic.slice(0, 256) }, 'ACL denied');
  return new AclDeniedError(action, topic, client.id);
}
