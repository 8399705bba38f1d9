export interface QueueLoad {
  model: string;
  /** Batch chunks waiting / running in the model's queue. */
  waiting: number;
  active: number;
  /** Enqueue time (ms) of the oldest waiting chunk, or null. */
  oldestWaitingAt: number | null;
  /** Interactive requests (all API processes) waiting for the model to load / in flight on it. */
  interactiveWaiting: number;
  interactiveInflight: number;
  interactiveSince: number | null;
}

export interface SchedulePolicy {
  /** Batch work of another model waits at most this long while the active model has work. */
  switchAfterMs: number;
  /** 'wait': interactive demand for another model waits (≤ interactiveMaxWaitMs) for the active model's queue to drain; 'preempt': swap at once. */
  interactive: 'wait' | 'preempt';
  interactiveMaxWaitMs: number;
}

const hasWork = (l: QueueLoad) =>
  l.waiting > 0 || l.active > 0 || l.interactiveWaiting > 0 || l.interactiveInflight > 0;

/** When the model's oldest unserved work arrived: interactive waiters count like queued chunks. */
function oldestOf(l: QueueLoad): number | null {
  const t = [l.oldestWaitingAt, l.interactiveWaiting > 0 ? l.interactiveSince : null].filter(
    (x): x is number => x !== null,
  );
  return t.length ? Math.min(...t) : null;
}

/**
 * Which model a single-GPU worker should serve now. Pure.
 * - Never leave a model that has interactive requests in flight (they go to its engine directly).
 * - Keep the active model while it has work: a swap costs a model load.
 * - Interactive demand for another model: 'preempt' swaps now; 'wait' swaps once it has waited
 *   interactiveMaxWaitMs. Batch work of another model swaps once it has waited switchAfterMs.
 * - When the active model is idle, take the model whose work has waited longest.
 * - Chunks stuck "active" with no live worker (a crashed one) only move back to waiting when a
 *   Worker on that queue runs its stalled check, so a queue with only active jobs counts too.
 */
export function pickModel(
  loads: readonly QueueLoad[],
  active: string | null,
  activeSince: number,
  now: number,
  policy: SchedulePolicy,
): string | null {
  const current = loads.find((l) => l.model === active);
  if (current && current.interactiveInflight > 0) return active;
  const others = loads.filter((l) => l.model !== active && hasWork(l));
  const byAge = others.filter((l) => oldestOf(l) !== null).sort((a, b) => oldestOf(a)! - oldestOf(b)!);

  if (current && hasWork(current)) {
    const interactive = others
      .filter((l) => l.interactiveWaiting > 0)
      .sort((a, b) => a.interactiveSince! - b.interactiveSince!)[0];
    if (interactive) {
      if (policy.interactive === 'preempt') return interactive.model;
      if (now - interactive.interactiveSince! > policy.interactiveMaxWaitMs) return interactive.model;
    }
    const starved = byAge.find((l) => l.oldestWaitingAt !== null && now - l.oldestWaitingAt > policy.switchAfterMs);
    if (starved && now - activeSince > policy.switchAfterMs) return starved.model;
    return active;
  }
  if (byAge[0]) return byAge[0].model;
  return others[0]?.model ?? active;
}
