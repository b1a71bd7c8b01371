import { z } from 'zod';

/**
 * The alert message: what the processors publish on `alertsSubject(tenant, deviceId)` for each
 * alert transition (and write to the `alerts` measurement), and what anyone reacting to alerts
 * (the gateway's live view, an operator's own service) reads there.
 */
export const ALERT_SEVERITIES = ['info', 'warning', 'critical'] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];

export const ALERT_STATES = ['firing', 'resolved'] as const;
export type AlertState = (typeof ALERT_STATES)[number];

export const AlertMessage = z.object({
  tenant: z.string(),
  deviceId: z.string(),
  rule: z.string(),
  severity: z.enum(ALERT_SEVERITIES),
  state: z.enum(ALERT_STATES),
  /**
   * The quantity the rule compares: the reading (threshold), the rate per second (rate_of_change),
   * the signed z-score (anomaly), the seconds without a reading (absence).
   */
  value: z.number(),
  /** Event time (epoch ms) the transition happened at. */
  atMs: z.number(),
  message: z.string(),
});
/** One alert transition, as published. */
export type AlertTransition = z.infer<typeof AlertMessage>;
