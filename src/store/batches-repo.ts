import { and, desc, eq, getTableColumns, inArray, sql } from 'drizzle-orm';
import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';
import { batches, batchChunks, batchRequests } from './schema.js';
import type { BatchStatus } from '../domain/batch-status.js';
import { STATUS_TIMESTAMP } from '../domain/batch-status.js';

export type BatchRow = typeof batches.$inferSelect;
export type NewBatchRow = typeof batches.$inferInsert;
export type ChunkRow = typeof batchChunks.$inferSelect;

export interface RequestSlice {
  idx: number;
  customId: string;
  line: number;
  offset: number;
  length: number;
}

/** One finished request, as the control plane stores it. */
export interface StoredResult {
  batchId: string;
  idx: number;
  line: string;
  isError: boolean;
  usage?: { input: number; cached: number; output: number; reasoning: number };
  latencyMs?: number;
}

export type BatchesRepo = ReturnType<typeof createBatchesRepo>;

export function createBatchesRepo(db: Db) {
  const client = db.$client;
  // Only a request that is in an outstanding chunk takes a result. A request that is done keeps
  // its first result; one that went back to pending (its chunk was withdrawn, or closed by a
  // stale attempt) waits for its next chunk: a straggler result from an attempt the control
  // plane gave up on (Redis lost the job, the chunk was re-sent) must not land after the batch
  // was finalized without it, which would make request_counts disagree with the files.
  const markDone = client.prepare(
    `UPDATE batch_requests SET state = 'done', result = ?, is_error = ?, latency_ms = ? WHERE batch_id = ? AND idx = ? AND state = 'queued'`,
  );
  /** Statements prepared once, on first use (preparing costs about as much as running one). */
  const cache = new Map<string, Statement>();
  const stmt = (text: string): Statement => {
    let st = cache.get(text);
    if (!st) cache.set(text, (st = client.prepare(text)));
    return st;
  };
  // The batches row read on every tick and every GET: raw SQL with drizzle's column → key
  // mapping (all of them plain integer/text columns), without building the query each time.
  const batchColumns = Object.entries(getTableColumns(batches))
    .map(([key, col]) => `"${col.name}" AS "${key}"`)
    .join(', ');
  const getBatch = client.prepare(`SELECT ${batchColumns} FROM batches WHERE id = ?`);
  const bumpCounts = client.prepare(
    `UPDATE batches SET completed = completed + ?, failed = failed + ?, input_tokens = input_tokens + ?, cached_tokens = cached_tokens + ?,
       output_tokens = output_tokens + ?, reasoning_tokens = reasoning_tokens + ? WHERE id = ?`,
  );

  const statusListeners = new Set<(id: string) => void>();
  const statusChanged = (id: string) => {
    for (const fn of statusListeners) fn(id);
  };

  return {
    /**
     * Calls `fn` after a batch is inserted or changes status, synchronously (inside the caller's
     * transaction, if any): a listener only schedules work. Returns the unsubscribe function.
     */
    onStatusChange(fn: (id: string) => void): () => void {
      statusListeners.add(fn);
      return () => statusListeners.delete(fn);
    },
    /** Runs `fn` in one SQLite transaction (other repos on the same db join it). */
    transaction<T>(fn: () => T): T {
      return client.transaction(fn)();
    },
    insert(row: NewBatchRow): void {
      db.insert(batches).values(row).run();
      statusChanged(row.id);
    },
    get(id: string): BatchRow | undefined {
      return getBatch.get(id) as BatchRow | undefined;
    },
    /** Idempotency keys are per owner: two projects may use the same key for different batches. */
    findByIdempotencyKey(key: string, owner: string | null): BatchRow | undefined {
      return db
        .select()
        .from(batches)
        .where(and(eq(batches.idempotencyKey, key), sql`${batches.owner} IS ${owner}`))
        .get();
    },
    findRecentByFingerprint(fingerprint: string, sinceS: number, owner: string | null): BatchRow | undefined {
      return db
        .select()
        .from(batches)
        .where(
          and(
            eq(batches.fingerprint, fingerprint),
            sql`${batches.owner} IS ${owner}`,
            sql`${batches.createdAt} >= ${sinceS}`,
          ),
        )
        .orderBy(desc(batches.createdAt))
        .get();
    },
    /**
     * Newest first (insertion order, so batches created in the same second keep theirs); `after` is a batch id.
     * `owner`: only that project's batches (null: those created with no keys); undefined: all.
     */
    list(opts: { limit: number; after?: BatchRow; owner?: string | null }): { rows: BatchRow[]; hasMore: boolean } {
      const cursor = opts.after ? sql`rowid < (SELECT rowid FROM batches WHERE id = ${opts.after.id})` : undefined;
      const ownedBy = opts.owner === undefined ? undefined : sql`${batches.owner} IS ${opts.owner}`;
      const rows = db
        .select()
        .from(batches)
        .where(and(cursor, ownedBy))
        .orderBy(sql`rowid DESC`)
        .limit(opts.limit + 1)
        .all();
      return { rows: rows.slice(0, opts.limit), hasMore: rows.length > opts.limit };
    },
    /** Batches of this owner that are not finished (validating, in_progress, finalizing, cancelling). */
    countActive(owner: string | null): number {
      const r = stmt(
        `SELECT count(*) AS n FROM batches WHERE owner IS ? AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling')`,
      ).get(owner) as { n: number };
      return r.n;
    },
    listByStatus(statuses: readonly BatchStatus[]): BatchRow[] {
      if (statuses.length === 0) return [];
      return stmt(`SELECT ${batchColumns} FROM batches WHERE status IN (${statuses.map(() => '?').join(', ')})`).all(
        ...statuses,
      ) as BatchRow[];
    },
    /** Moves a batch to `to` only if it is in one of `from`; sets the status's timestamp. */
    transition(
      id: string,
      from: readonly BatchStatus[],
      to: BatchStatus,
      nowS: number,
      extra: Partial<NewBatchRow> = {},
    ): boolean {
      const ts = (STATUS_TIMESTAMP as Partial<Record<BatchStatus, keyof NewBatchRow>>)[to];
      const set: Partial<NewBatchRow> = { ...extra, status: to };
      if (ts) (set as Record<string, unknown>)[ts] = nowS;
      const r = db
        .update(batches)
        .set(set)
        .where(and(eq(batches.id, id), inArray(batches.status, [...from])))
        .run();
      if (r.changes !== 1) return false;
      statusChanged(id);
      return true;
    },
    update(id: string, set: Partial<NewBatchRow>): void {
      db.update(batches).set(set).where(eq(batches.id, id)).run();
    },

    // --- requests -----------------------------------------------------------------
    insertRequests(batchId: string, rows: readonly RequestSlice[]): void {
      // 100 rows per INSERT statement: a third of the time of one statement per row.
      const PER = 100;
      const values = (n: number) =>
        `INSERT INTO batch_requests (batch_id, idx, custom_id, line, offset, length) VALUES ${Array(n).fill('(?, ?, ?, ?, ?, ?)').join(', ')}`;
      const many = stmt(values(PER));
      client.transaction(() => {
        const args: unknown[] = [];
        let i = 0;
        for (; i + PER <= rows.length; i += PER) {
          args.length = 0;
          for (let j = i; j < i + PER; j++) {
            const r = rows[j]!;
            args.push(batchId, r.idx, r.customId, r.line, r.offset, r.length);
          }
          many.run(...args);
        }
        if (i < rows.length) {
          args.length = 0;
          for (let j = i; j < rows.length; j++) {
            const r = rows[j]!;
            args.push(batchId, r.idx, r.customId, r.line, r.offset, r.length);
          }
          client.prepare(values(rows.length - i)).run(...args);
        }
      })();
    },
    deleteRequests(batchId: string): void {
      client.transaction(() => {
        db.delete(batchRequests).where(eq(batchRequests.batchId, batchId)).run();
        db.delete(batchChunks).where(eq(batchChunks.batchId, batchId)).run();
      })();
    },
    customIdOf(batchId: string, idx: number): string | undefined {
      const r = stmt(`SELECT custom_id AS c FROM batch_requests WHERE batch_id = ? AND idx = ?`).get(batchId, idx) as
        { c: string } | undefined;
      return r?.c;
    },
    countByState(batchId: string): { pending: number; queued: number; done: number } {
      const rows = stmt(`SELECT state, count(*) AS n FROM batch_requests WHERE batch_id = ? GROUP BY state`).all(
        batchId,
      ) as { state: string; n: number }[];
      const out = { pending: 0, queued: 0, done: 0 };
      for (const r of rows) out[r.state as keyof typeof out] = r.n;
      return out;
    },
    /** Takes up to `limit` pending requests into a new chunk, atomically. */
    takeChunk(batchId: string, limit: number, nowMs: number): { chunkNo: number; requests: RequestSlice[] } | null {
      return client.transaction(() => {
        const requests = stmt(
          `SELECT idx, custom_id AS customId, line, offset, length FROM batch_requests WHERE batch_id = ? AND state = 'pending' ORDER BY idx LIMIT ?`,
        ).all(batchId, limit) as RequestSlice[];
        if (requests.length === 0) return null;
        const { next } = stmt(
          `SELECT coalesce(max(chunk_no), -1) + 1 AS next FROM batch_chunks WHERE batch_id = ?`,
        ).get(batchId) as { next: number };
        stmt(
          `INSERT INTO batch_chunks (batch_id, chunk_no, state, attempt, sent_at) VALUES (?, ?, 'queued', 0, ?)`,
        ).run(batchId, next, nowMs);
        const first = requests[0]!.idx;
        const last = requests[requests.length - 1]!.idx;
        stmt(
          `UPDATE batch_requests SET state = 'queued', chunk_no = ? WHERE batch_id = ? AND state = 'pending' AND idx BETWEEN ? AND ?`,
        ).run(next, batchId, first, last);
        return { chunkNo: next, requests };
      })();
    },
    /** Requests of a chunk that have no result yet (to re-send a lost chunk). */
    unfinishedInChunk(batchId: string, chunkNo: number): RequestSlice[] {
      return stmt(
        `SELECT idx, custom_id AS customId, line, offset, length FROM batch_requests WHERE batch_id = ? AND chunk_no = ? AND state != 'done' ORDER BY idx`,
      ).all(batchId, chunkNo) as RequestSlice[];
    },
    queuedChunks(batchId: string): ChunkRow[] {
      return db
        .select()
        .from(batchChunks)
        .where(and(eq(batchChunks.batchId, batchId), eq(batchChunks.state, 'queued')))
        .all();
    },
    countQueuedChunks(batchId: string): number {
      const r = stmt(`SELECT count(*) AS n FROM batch_chunks WHERE batch_id = ? AND state = 'queued'`).get(batchId) as {
        n: number;
      };
      return r.n;
    },
    bumpChunkAttempt(batchId: string, chunkNo: number, nowMs: number): number {
      const r = stmt(
        `UPDATE batch_chunks SET attempt = attempt + 1, sent_at = ? WHERE batch_id = ? AND chunk_no = ? RETURNING attempt`,
      ).get(nowMs, batchId, chunkNo) as { attempt: number } | undefined;
      return r?.attempt ?? 0;
    },
    /**
     * A worker says it finished a chunk. Requests of it that still have no result go back to
     * pending (it skipped them, e.g. on cancel, or their results were lost with Redis).
     * With `attempt`, only that attempt closes the chunk: the chunk-done of an attempt that was
     * re-sent (its job was lost) must not close the attempt still running.
     */
    finishChunk(batchId: string, chunkNo: number, attempt?: number): void {
      client.transaction(() => {
        const r =
          attempt === undefined
            ? stmt(`UPDATE batch_chunks SET state = 'done' WHERE batch_id = ? AND chunk_no = ?`).run(batchId, chunkNo)
            : stmt(`UPDATE batch_chunks SET state = 'done' WHERE batch_id = ? AND chunk_no = ? AND attempt = ?`).run(
                batchId,
                chunkNo,
                attempt,
              );
        if (r.changes === 0) return;
        stmt(
          `UPDATE batch_requests SET state = 'pending', chunk_no = NULL WHERE batch_id = ? AND chunk_no = ? AND state = 'queued'`,
        ).run(batchId, chunkNo);
      })();
    },
    /**
     * Stores results as they arrive, in one transaction. A result for a request that is
     * already done (or not in an outstanding chunk) is ignored: this is what makes
     * redelivery after a crash exactly-once.
     * Returns how many were new.
     */
    storeResults(results: readonly StoredResult[]): number {
      let stored = 0;
      // Counters are summed per batch and written once per call, not once per result.
      const sums = new Map<string, [number, number, number, number, number, number]>();
      client.transaction(() => {
        for (const r of results) {
          if (markDone.run(r.line, r.isError ? 1 : 0, r.latencyMs ?? null, r.batchId, r.idx).changes !== 1) continue;
          stored += 1;
          let t = sums.get(r.batchId);
          if (!t) sums.set(r.batchId, (t = [0, 0, 0, 0, 0, 0]));
          const u = r.usage;
          t[r.isError ? 1 : 0] += 1;
          t[2] += u?.input ?? 0;
          t[3] += u?.cached ?? 0;
          t[4] += u?.output ?? 0;
          t[5] += u?.reasoning ?? 0;
        }
        for (const [batchId, t] of sums) bumpCounts.run(...t, batchId);
      })();
      return stored;
    },
    /**
     * Every request in input order, for writing the output and error files. Read in pages of
     * 1,000 rows: an open better-sqlite3 iterator keeps the connection busy, and the caller
     * awaits file writes between rows, during which results of other batches, new files and
     * new batches must still be written.
     */
    *iterateRequests(batchId: string): IterableIterator<{
      idx: number;
      customId: string;
      state: string;
      result: string | null;
      isError: number | null;
    }> {
      const page = stmt(
        `SELECT idx, custom_id AS customId, state, result, is_error AS isError FROM batch_requests WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT 1000`,
      );
      let after = -1;
      for (;;) {
        const rows = page.all(batchId, after) as {
          idx: number;
          customId: string;
          state: string;
          result: string | null;
          isError: number | null;
        }[];
        yield* rows;
        if (rows.length < 1000) return;
        after = rows[rows.length - 1]!.idx;
      }
    },
  };
}
