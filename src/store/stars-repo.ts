import type { Db } from './db.js';

export type StarsRepo = ReturnType<typeof createStarsRepo>;

/** Starred answers (result_stars): the dashboard's picks for a fine-tuning set. */
export function createStarsRepo(db: Db) {
  const client = db.$client;
  const add = client.prepare(
    `INSERT INTO result_stars (batch_id, custom_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
  );
  const del = client.prepare(`DELETE FROM result_stars WHERE batch_id = ? AND custom_id = ?`);
  return {
    star(batchId: string, customId: string, nowS: number): void {
      add.run(batchId, customId, nowS);
    },
    unstar(batchId: string, customId: string): boolean {
      return del.run(batchId, customId).changes === 1;
    },
    /** Stars of the given batches (all batches when `batchIds` is undefined), oldest batch first, then input order. */
    list(batchIds?: readonly string[]): { batchId: string; customId: string }[] {
      const filter = batchIds ? `WHERE s.batch_id IN (${batchIds.map(() => '?').join(', ')})` : '';
      return client
        .prepare(
          `SELECT s.batch_id AS batchId, s.custom_id AS customId FROM result_stars s
           LEFT JOIN batches b ON b.id = s.batch_id
           LEFT JOIN batch_requests r ON r.batch_id = s.batch_id AND r.custom_id = s.custom_id
           ${filter} ORDER BY b.rowid, r.idx`,
        )
        .all(...(batchIds ?? [])) as { batchId: string; customId: string }[];
    },
  };
}
