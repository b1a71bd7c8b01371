import type { AlertTransition } from '../../contract/alerts.js';
import { type CheckpointPlan, checkpointOf, type PartitionCheckpoint } from '../windows/partition-windows.js';

/**
 * A partition checkpoint is one KV value, so it must fit NATS's max payload (1 MiB by default)
 * whatever the number of devices and firing alerts: CHECKPOINT_MAX_BYTES. Pure: what goes in, in
 * order of need:
 * 1. the watermarks a replay from ackSeq needs exactly (without them a replayed reading could be
 *    judged otherwise than the first time, and a partial window overwrite a whole one): all or no
 *    checkpoint at all;
 * 2. the firing alerts (one left out fires again, or is never resolved, after a restart);
 * 3. the other watermarks, the most recently active first; the rest are folded into the floor,
 *    which only ever makes a reading late that would not have been, never reopens a window.
 */
export type SavedAlert = Omit<AlertTransition, 'message'> & { message?: string };

/** What is saved per partition: the windows' checkpoint and the alerts firing at that point. */
export interface SavedCheckpoint extends PartitionCheckpoint {
  firing?: SavedAlert[];
}

export interface FittedCheckpoint {
  /** Undefined when the required watermarks alone are over the limit: nothing can be saved. */
  checkpoint: SavedCheckpoint | undefined;
  /** Watermarks folded into the floor and alerts left out to make it fit. */
  foldedWatermarks: number;
  alertsLeftOut: number;
}

/** `{"ackSeq":…,"watermarks":{},"freed":{},"floor":…,"firing":[]}` with room for any number. */
const FRAME_BYTES = 128;

const entryBytes = (key: string, watermark: number) =>
  Buffer.byteLength(JSON.stringify(key)) + String(watermark).length + 2;

/** An alert as saved: its message is rebuilt by the next transition, not needed to restore it. */
function saved({ message: _, ...alert }: AlertTransition | SavedAlert): SavedAlert {
  return alert;
}

export function fitCheckpoint(
  plan: CheckpointPlan,
  firing: readonly (AlertTransition | SavedAlert)[],
  maxBytes: number,
): FittedCheckpoint {
  let bytes = FRAME_BYTES;
  for (const [key, watermark] of plan.required) bytes += entryBytes(key, watermark);
  if (bytes > maxBytes) return { checkpoint: undefined, foldedWatermarks: 0, alertsLeftOut: 0 };

  const alerts: SavedAlert[] = [];
  for (const alert of firing) {
    const s = saved(alert);
    const size = Buffer.byteLength(JSON.stringify(s)) + 1;
    if (bytes + size > maxBytes) continue;
    bytes += size;
    alerts.push(s);
  }

  let kept = plan.optional.length;
  let floor = plan.floor;
  for (let i = 0; i < plan.optional.length; i++) {
    const [key, watermark] = plan.optional[i]!;
    const size = entryBytes(key, watermark);
    if (bytes + size > maxBytes) {
      kept = i;
      break;
    }
    bytes += size;
  }
  for (let i = kept; i < plan.optional.length; i++) floor = Math.max(floor, plan.optional[i]![1]);
  const checkpoint: SavedCheckpoint = checkpointOf(plan, plan.optional.slice(0, kept), floor);
  if (alerts.length > 0) checkpoint.firing = alerts;
  return {
    checkpoint,
    foldedWatermarks: plan.optional.length - kept,
    alertsLeftOut: firing.length - alerts.length,
  };
}
