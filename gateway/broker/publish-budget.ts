import type { Client, PublishPacket } from 'aedes';
import type { Logger } from '../../common/logger.js';
import { PublishRateError } from '../errors.js';
import { TokenBuckets } from '../limits/token-buckets.js';
import type { GatewayMetrics } from '../metrics.js';
import type { Done } from './flow-control.js';
import { guarded } from './guarded.js';

export interface PublishBudgetOptions {
  /** DEVICE_MAX_MSGS_PER_SEC (0: no limit) and DEVICE_MSGS_BURST. */
  msgsPerSec: number;
  msgsBurst: number;
  /** DEVICE_MAX_BYTES_PER_SEC (0: no limit) and DEVICE_BYTES_BURST. */
  bytesPerSec: number;
  bytesBurst: number;
  metrics: Pick<GatewayMetrics, 'limitReached' | 'throttled' | 'publish'>;
  log: Logger;
  now?: () => number;
}

/** What the budgets need of a client. */
export type BudgetedClient = Pick<Client, 'id' | 'closed'>;

/**
 * Each device's publish budgets, over all its connections: publishes and payload bytes a second.
 * Bytes bound what the device makes the gateway parse and store: a few large batches cost as much as
 * many small publishes.
 */
export class PublishBudgets {
  /** Undefined when DEVICE_MAX_MSGS_PER_SEC is 0. */
  private readonly publishRate: TokenBuckets | undefined;
  /** Undefined when DEVICE_MAX_BYTES_PER_SEC is 0. */
  private readonly byteRate: TokenBuckets | undefined;

  constructor(private readonly o: PublishBudgetOptions) {
    this.publishRate = o.msgsPerSec > 0 ? new TokenBuckets(o.msgsPerSec, o.msgsBurst, o.now) : undefined;
    this.byteRate = o.bytesPerSec > 0 ? new TokenBuckets(o.bytesPerSec, o.bytesBurst, o.now) : undefined;
  }

  /** Forgets devices whose budgets are full again. */
  sweep(): void {
    this.publishRate?.sweep();
    this.byteRate?.sweep();
  }

  /**
   * Lets a publish go ahead (`proceed`) now, or once its device's budgets allow, or refuses it through
   * `done`. Over the rate, a publish waits for its tokens: throttled, not refused. It stays in flight
   * meanwhile, so past MAX_IN_FLIGHT_PER_CLIENT the connection is not read and TCP slows the device
   * down. A device a whole burst in debt is not slowing down: the connection is closed (`lost` gives
   * its reason), this publish unacknowledged (the device still has it and sends it again).
   */
  admit(
    client: BudgetedClient,
    deviceId: string,
    packet: PublishPacket,
    lost: (reason: string) => void,
    proceed: () => void,
    done: Done,
  ): void {
    const { metrics, log } = this.o;
    const wait = this.budget(client, deviceId, packet);
    if (wait === 0) {
      proceed();
      return;
    }
    if (wait === undefined && client.closed) {
      // A will the device has no budget left for: dropped, counted in the limits.
      metrics.publish('throttled', packet.qos);
      done(new PublishRateError(deviceId));
      return;
    }
    if (wait === undefined) {
      metrics.throttled('disconnected');
      metrics.publish('throttled', packet.qos);
      log.warn(
        {
          clientId: client.id,
          device: deviceId,
          perSec: this.o.msgsPerSec,
          bytesPerSec: this.o.bytesPerSec,
        },
        'publishing far above the rate limit: disconnecting',
      );
      lost('publish rate limit');
      done(new PublishRateError(deviceId));
      return;
    }
    metrics.throttled('delayed');
    setTimeout(() => {
      // A QoS 0 publish that waited its turn is stored even if the connection was cut meanwhile: it
      // was within the rate. A QoS 1/2 one is left unacknowledged, and the device sends it again.
      if (client.closed && packet.qos > 0) {
        metrics.publish('not_stored', packet.qos);
        done(new Error('connection closed while throttled'));
        return;
      }
      guarded(log, client.id, proceed, done);
    }, wait);
  }

  /**
   * What a publish must wait for: 0 to go ahead, milliseconds, or undefined for a whole burst in debt.
   * A closed client's publish is its last will, which is not held back.
   */
  private budget(client: BudgetedClient, deviceId: string, packet: PublishPacket): number | undefined {
    // The topic too: up to 64 KiB of it is parsed and checked like the payload.
    const bytes =
      packet.topic.length +
      (typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length);
    if (client.closed) return this.willBudget(deviceId, bytes);
    return this.take(deviceId, bytes);
  }

  /**
   * Takes one message of `bytes` from a device's budgets: 0 to go ahead, the milliseconds to wait, or
   * undefined for a whole burst in debt. MQTT publishes and HTTP requests draw on the same budgets.
   */
  take(deviceId: string, bytes: number): number | undefined {
    const { metrics } = this.o;
    const forPublish = this.publishRate === undefined ? 0 : this.publishRate.take(deviceId);
    if (forPublish !== 0) metrics.limitReached('DEVICE_MAX_MSGS_PER_SEC');
    const forBytes = this.byteRate === undefined ? 0 : this.byteRate.take(deviceId, bytes);
    if (forBytes !== 0) metrics.limitReached('DEVICE_MAX_BYTES_PER_SEC');
    return forPublish === undefined || forBytes === undefined ? undefined : Math.max(forPublish, forBytes);
  }

  /**
   * A closed client's publish is its last will: nobody waits for it, so it is not held back, but it
   * pays like any publish; a device out of budget has its will dropped (counted). Otherwise wills
   * would be a way round every rate: a device reconnecting in a loop with a will on its telemetry
   * topic stored 1,200 readings a second against a limit of 100.
   */
  private willBudget(deviceId: string, bytes: number): number | undefined {
    const { metrics } = this.o;
    if (this.publishRate !== undefined && !this.publishRate.tryTake(deviceId)) {
      metrics.limitReached('DEVICE_MAX_MSGS_PER_SEC');
      return undefined;
    }
    if (this.byteRate !== undefined && !this.byteRate.tryTake(deviceId, bytes)) {
      metrics.limitReached('DEVICE_MAX_BYTES_PER_SEC');
      return undefined;
    }
    return 0;
  }
}
