import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';
import { ACTIVE_STATUSES } from '../domain/batch-status.js';
import type { BatchRow } from './batches-repo.js';

export type OpsRepo = ReturnType<typeof createOpsRepo>;

const ACTIVE_SQL = ACTIVE_STATUSES.map((s) => `'${s}'`).join(',');
const COLUMNS = `id, status, model, endpoint, created_at AS createdAt, in_progress_at AS inProgressAt, finalizing_at AS finalizingAt,
  completed_at AS completedAt, failed_at AS failedAt, expired_at AS expiredAt, cancelling_at AS cancellingAt, cancelled_at AS cancelledAt,
  total, completed, failed, metadata, errors, ending`;

export type OpsBatchRow = Pick<
  BatchRow,
  | 'id'
  | 'status'
  | 'model'
  | 'endpoint'
  | 'createdAt'
  | 'inProgressAt'
  | 'finalizingAt'
  | 'completedAt'
  | 'failedAt'
  | 'expiredAt'
  | 'cancellingAt'
  | 'cancelledAt'
  | 'total'
  | 'completed'
  | 'failed'
  | 'metadata'
  | 'errors'
  | 'ending'
>;

/** Read-only queries of the operator API and /metrics (aggregates over batches, at scrape time). */
export function createOpsRepo(db: Db) {
  const client = db.$client;
  const cache = new Map<string, Statement>();
  const stmt = (text: string): Statement => {
    let st = cache.get(text);
    if (!st) cache.set(text, (st = client.prepare(text)));
    return st;
  };
  return {
    statusCounts(): { status: string; n: number }[] {
      return stmt(`SELECT status, count(*) AS n FROM batches GROUP BY status`).all() as { status: string; n: number }[];
    },
    /** Tokens of every stored result, per model (batches.usage sums, bumped as results are stored). */
    tokenTotals(): { model: string; input: number; output: number; completed: number; failed: number }[] {
      return stmt(
        `SELECT coalesce(model, '') AS model, sum(input_tokens) AS input, sum(output_tokens) AS output, sum(completed) AS completed, sum(failed) AS failed FROM batches GROUP BY 1`,
      ).all() as { model: string; input: number; output: number; completed: number; failed: number }[];
    },
    /** Unfinished requests of active batches per model: `pending` (not yet sent) and `queued` (sent to workers). */
    openRequests(): { model: string; state: string; n: number }[] {
      return stmt(
        `SELECT coalesce(b.model, '') AS model, r.state AS state, count(*) AS n FROM batches b JOIN batch_requests r ON r.batch_id = b.id
         WHERE b.status IN (${ACTIVE_SQL}) AND r.state != 'done' GROUP BY 1, 2`,
      ).all() as { model: string; state: string; n: number }[];
    },
    list(opts: { active: boolean; limit: number }): OpsBatchRow[] {
      const where = opts.active ? `WHERE status IN (${ACTIVE_SQL})` : '';
      return stmt(`SELECT ${COLUMNS} FROM batches ${where} ORDER BY created_at DESC, id DESC LIMIT ?`).all(
        opts.limit,
      ) as OpsBatchRow[];
    },
    get(id: string): OpsBatchRow | undefined {
      return stmt(`SELECT ${COLUMNS} FROM batches WHERE id = ?`).get(id) as OpsBatchRow | undefined;
    },
    recentlyFailed(limit: number): OpsBatchRow[] {
      return stmt(`SELECT ${COLUMNS} FROM batches WHERE status = 'failed' ORDER BY failed_at DESC LIMIT ?`).all(
        limit,
      ) as OpsBatchRow[];
    },
    /** Batches with failed requests, newest first (no per-request time is stored). */
    withFailedRequests(limit: number): OpsBatchRow[] {
      return stmt(`SELECT ${COLUMNS} FROM batches WHERE failed > 0 ORDER BY created_at DESC LIMIT ?`).all(
        limit,
      ) as OpsBatchRow[];
    },
    /** One failed request's stored error line (the output/error JSONL line: no prompt text). */
    sampleError(batchId: string): string | undefined {
      const row = stmt(
        `SELECT result FROM batch_requests WHERE batch_id = ? AND is_error = 1 AND result IS NOT NULL LIMIT 1`,
      ).get(batchId) as { result: string } | undefined;
      return row?.result;
    },
  };
}
