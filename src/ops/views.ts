import type { OpsBatchRow } from '../store/ops-repo.js';
import type { WorkerHeartbeat } from '../queue/jobs.js';

/** Operator-API timestamps are Unix seconds (ms precision where the source has it). */
export const toS = (ms: number) => Math.round(ms) / 1000;
const ago = (ms: number, now: number) => `${Math.max(0, Math.round((now - ms) / 1000))} s`;

export interface OpsBatch {
  id: string;
  status: string;
  model: string | null;
  endpoint: string;
  created_at: number;
  request_counts: { total: number; completed: number; failed: number };
  progress: number;
  throughput_rps: number;
  eta_s: number | null;
  waiting_reason: string | null;
  metadata: Record<string, string> | null;
}

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

/**
 * Why an active batch makes no progress, in words, from what workers advertise; null when it
 * progresses or nothing is in its way. `ahead` = earlier active batches of the same model that
 * are progressing.
 */
export function waitingReason(
  row: OpsBatchRow,
  rps: number,
  live: readonly WorkerHeartbeat[],
  ahead: readonly string[],
  now: number,
): string | null {
  if (row.status !== 'in_progress' || rps > 0 || row.completed + row.failed >= row.total || !row.model) return null;
  const model = row.model;
  const serving = live.filter((w) => w.models.includes(model));
  if (serving.length === 0) return `no live worker serves model ${model}`;
  const engines = serving.flatMap((w) => w.engines.filter((e) => e.model === model).map((e) => ({ w, e })));
  const loading = engines.find(({ e }) => e.state === 'starting');
  if (loading) return `model ${model} is loading on worker ${loading.w.workerId} (since ${ago(loading.e.since, now)})`;
  const ready = engines.some(({ e }) => e.state === 'ready');
  const failed = engines.find(({ e }) => e.state === 'failed');
  if (!ready && failed)
    return `model ${model} failed on worker ${failed.w.workerId}: ${(failed.e.lastError ?? 'no reason given').slice(0, 300)}`;
  if (!ready) {
    const busy = serving.find((w) => w.activeModel && w.activeModel !== model);
    if (busy) return `worker ${busy.workerId} is serving model ${busy.activeModel}; model ${model} waits for its turn`;
  }
  if (ahead.length > 0) return `queued behind ${ahead[0]}`;
  if (!ready) return `model ${model} is not loaded yet`;
  return null;
}

export function toOpsBatch(row: OpsBatchRow, rps: number, reason: string | null): OpsBatch {
  const done = row.completed + row.failed;
  const terminal = TERMINAL.has(row.status);
  const remaining = Math.max(0, row.total - done);
  let metadata: Record<string, string> | null;
  try {
    metadata = row.metadata ? (JSON.parse(row.metadata) as Record<string, string>) : null;
  } catch {
    metadata = null;
  }
  return {
    id: row.id,
    status: row.status,
    model: row.model,
    endpoint: row.endpoint,
    created_at: row.createdAt,
    request_counts: { total: row.total, completed: row.completed, failed: row.failed },
    progress: row.total > 0 ? Math.min(1, done / row.total) : terminal ? 1 : 0,
    throughput_rps: Math.round(rps * 100) / 100,
    eta_s: terminal ? 0 : rps > 0 && row.total > 0 ? Math.ceil(remaining / rps) : null,
    waiting_reason: reason,
    metadata,
  };
}

/** Done counts of a batch over time: the recent rate from the samples of the last `windowMs`. */
export class RateWindow {
  private readonly samples = new Map<string, { t: number; done: number }[]>();
  constructor(private readonly windowMs = 30_000) {}

  record(id: string, done: number, t: number): void {
    let s = this.samples.get(id);
    if (!s) this.samples.set(id, (s = []));
    s.push({ t, done });
    while (s.length > 2 && s[0]!.t < t - this.windowMs) s.shift();
  }

  rate(id: string): number {
    const s = this.samples.get(id);
    if (!s || s.length < 2) return 0;
    const first = s[0]!;
    const last = s[s.length - 1]!;
    return last.t > first.t ? Math.max(0, ((last.done - first.done) * 1000) / (last.t - first.t)) : 0;
  }

  /** Forgets batches not in `keep`. */
  retain(keep: ReadonlySet<string>): void {
    for (const id of this.samples.keys()) if (!keep.has(id)) this.samples.delete(id);
  }
}
