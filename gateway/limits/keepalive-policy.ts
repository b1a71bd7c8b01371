/**
 * The keepalive the gateway applies to a CONNECT. MQTT 3.1.1 has no way to tell a client (v5's
 * Server Keep Alive does not exist in it), so the bound is applied on the gateway's side only: the
 * connection is closed after 1.5 × the applied keepalive of silence [MQTT-3.1.2-24]. The spec allows
 * it: "a Server is permitted to disconnect a Client that it determines to be inactive or
 * non-responsive at any time, regardless of the Keep Alive value provided by that Client" (§3.1.2.10).
 *
 * Applied rather than refused: a keepalive is usually fixed in a device's firmware, and a refusal
 * (mosquitto answers 3.1.1 clients above its max_keepalive with CONNACK 2, "identifier rejected")
 * strands it for good, while a device that does talk within the bound never notices the bound.
 */
export interface KeepalivePolicy {
  /** Below it (but not 0) the minimum applies: a short stall does not cost a reconnect. */
  minSeconds: number;
  /** 0 and above it the maximum applies: a dead peer is noticed. 0 = no maximum, keepalive 0 allowed. */
  maxSeconds: number;
}

export interface KeepaliveDecision {
  seconds: number;
  /** The setting that changed what the client asked for, if one did. */
  applied: 'MIN_KEEPALIVE_SECONDS' | 'MAX_KEEPALIVE_SECONDS' | undefined;
}

export function keepaliveFor(requested: number, policy: KeepalivePolicy): KeepaliveDecision {
  // Keepalive 0 turns the mechanism off (§3.1.2.10): no dead-peer detection at all.
  if (policy.maxSeconds > 0 && (requested === 0 || requested > policy.maxSeconds))
    return { seconds: policy.maxSeconds, applied: 'MAX_KEEPALIVE_SECONDS' };
  if (requested > 0 && requested < policy.minSeconds)
    return { seconds: policy.minSeconds, applied: 'MIN_KEEPALIVE_SECONDS' };
  return { seconds: requested, applied: undefined };
}
