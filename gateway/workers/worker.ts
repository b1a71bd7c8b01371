import type { Logger } from '../../common/logger.js';
import type { GatewayConfig } from '../config.js';
import { createGateway, type Gateway } from '../gateway.js';
import { type FromWorker, isGatewayMessage, STATUS_INTERVAL_MS } from './messages.js';

/**
 * One gateway in a cluster worker: the MQTT listeners are shared through node:cluster (the primary
 * holds the sockets and hands each connection to a worker), the ops HTTP port and the live view are
 * the primary's. The worker reports its readiness every STATUS_INTERVAL_MS and answers the primary's
 * metrics requests with its gateway's registry; SIGTERM drains it as it would a single gateway.
 */
export async function startWorker(config: GatewayConfig, log: Logger): Promise<Gateway> {
  const send = (message: FromWorker) => {
    // The channel is gone once the primary is: nothing to tell, and the 'disconnect' below stops us.
    if (process.connected) process.send?.(message);
  };
  let gateway: Gateway | undefined;
  // Installed before the gateway is made, so that a scrape during a worker's start gets an answer.
  process.on('message', (message: unknown) => {
    if (!isGatewayMessage(message) || message.type !== 'gateway:metrics?') return;
    const requestId = message.requestId;
    (gateway ? gateway.metrics.registry.getMetricsAsJSON() : Promise.resolve([])).then(
      (metrics) => send({ type: 'gateway:metrics', requestId, metrics }),
      (err: Error) => {
        log.warn({ err: err.message }, 'metrics not collected for the primary');
        send({ type: 'gateway:metrics', requestId, metrics: [] });
      },
    );
  });
  // A primary that dies (SIGKILL) leaves its workers behind: each drains as on SIGTERM, rather than
  // hold devices nobody supervises. The signal goes through runService's own handler.
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));

  const report = () =>
    send({ type: 'gateway:status', gateway: gateway?.id, notReady: gateway?.notReady() ?? ['starting'] });
  const timer = setInterval(report, STATUS_INTERVAL_MS);
  timer.unref();
  report();

  try {
    gateway = await createGateway(config, log, { http: false });
  } catch (err) {
    clearInterval(timer);
    throw err;
  }
  send({ type: 'gateway:started', gateway: gateway.id });
  report();
  const made = gateway;
  return {
    ...made,
    async close() {
      // The last word before the drain: the primary's /readyz says "shutting down" at once.
      report();
      const closing = made.close();
      report();
      await closing;
      clearInterval(timer);
    },
  };
}
