export interface QueueLoad {
  model: string;
  waiting: number;
  active: number;
  /** Enqueue time (ms) of the oldest waiting chunk, or null. */
  oldestWaitingAt: number | null;
}

/**
 * Which model's queue a single-GPU worker should serve now. Pure.
 * - Keep the active model while it has work: swapping costs a model load.
 * - But once another model's oldest chunk has waited longer than `switchAfterMs` (and the
 *   active model has had at least that long), switch: nobody waits forever.
 * - When the active model is idle, take the model whose work waited longest (FIFO).
 * Returns null when there is nothing to do and nothing running.
 */
export function pickModel(loads: readonly QueueLoad[], active: string | null, activeSince: number, now: number, switchAfterMs: number): string | null {
  const busy = loads.filter((l) => l.waiting > 0 || l.active > 0);
  const current = loads.find((l) => l.model === active);
  const oldestOther = busy
    .filter((l) => l.model !== active && l.oldestWaitingAt !== null)
    .sort((a, b) => a.oldestWaitingAt! - b.oldestWaitingAt!)[0];
  if (current && (current.waiting > 0 || current.active > 0)) {
    const starved = oldestOther && now - oldestOther.oldestWaitingAt! > switchAfterMs && now - activeSince > switchAfterMs;
    return starved ? oldestOther.model : active;
  }
  if (oldestOther) return oldestOther.model;
  // Chunks stuck "active" with no live worker (a crashed one) only move back to waiting when a
  // Worker on that queue runs its stalled check, so a queue with only active jobs counts too.
  const stalled = busy.find((l) => l.model !== active);
  return stalled ? stalled.model : active;
}
