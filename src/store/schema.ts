import { sqliteTable, text, integer, primaryKey, index } from 'drizzle-orm/sqlite-core';

/** Uploaded and generated files. Bytes live on disk (file-storage.ts); this row is the metadata. */
export const files = sqliteTable(
  'files',
  {
    id: text('id').primaryKey(),
    bytes: integer('bytes').notNull(),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at'),
    filename: text('filename').notNull(),
    purpose: text('purpose').notNull(),
    /** Set when a client deleted the file: it is gone from the API; bytes wait for batches that read them. */
    deletedAt: integer('deleted_at'),
  },
  (t) => [index('files_purpose_created').on(t.purpose, t.createdAt), index('files_created').on(t.createdAt)],
);

export const batches = sqliteTable(
  'batches',
  {
    id: text('id').primaryKey(),
    endpoint: text('endpoint').notNull(),
    model: text('model'),
    inputFileId: text('input_file_id').notNull(),
    completionWindow: text('completion_window').notNull(),
    status: text('status').notNull(),
    outputFileId: text('output_file_id'),
    errorFileId: text('error_file_id'),
    createdAt: integer('created_at').notNull(),
    inProgressAt: integer('in_progress_at'),
    expiresAt: integer('expires_at').notNull(),
    finalizingAt: integer('finalizing_at'),
    completedAt: integer('completed_at'),
    failedAt: integer('failed_at'),
    expiredAt: integer('expired_at'),
    cancellingAt: integer('cancelling_at'),
    cancelledAt: integer('cancelled_at'),
    total: integer('total').notNull().default(0),
    completed: integer('completed').notNull().default(0),
    failed: integer('failed').notNull().default(0),
    inputTokens: integer('input_tokens').notNull().default(0),
    cachedTokens: integer('cached_tokens').notNull().default(0),
    outputTokens: integer('output_tokens').notNull().default(0),
    reasoningTokens: integer('reasoning_tokens').notNull().default(0),
    /** JSON array of {code,message,param,line} (validation errors), or null. */
    errors: text('errors'),
    /** JSON object of string pairs, or null. */
    metadata: text('metadata'),
    outputExpiresAfter: integer('output_expires_after'),
    idempotencyKey: text('idempotency_key'),
    /** Hash of the create parameters: finds the first copy of an SDK retry that had no Idempotency-Key. */
    fingerprint: text('fingerprint'),
    /** Set while a batch drains before it ends early: 'cancel' or 'expire'. */
    ending: text('ending'),
  },
  (t) => [index('batches_created').on(t.createdAt), index('batches_status').on(t.status), index('batches_idem').on(t.idempotencyKey)],
);

/**
 * One row per input line. The body stays in the input file (offset/length); the result
 * is the finished output or error line, written once, as it arrives from a worker.
 */
export const batchRequests = sqliteTable(
  'batch_requests',
  {
    batchId: text('batch_id').notNull(),
    idx: integer('idx').notNull(),
    customId: text('custom_id').notNull(),
    line: integer('line').notNull(),
    offset: integer('offset').notNull(),
    length: integer('length').notNull(),
    /** pending → queued (in a chunk) → done. */
    state: text('state').notNull().default('pending'),
    chunkNo: integer('chunk_no'),
    /** The finished JSONL line (output or error file). */
    result: text('result'),
    isError: integer('is_error', { mode: 'boolean' }),
  },
  (t) => [primaryKey({ columns: [t.batchId, t.idx] }), index('batch_requests_state').on(t.batchId, t.state, t.idx)],
);

/** A BullMQ job's worth of requests. `attempt` grows when the control plane re-sends a lost chunk. */
export const batchChunks = sqliteTable(
  'batch_chunks',
  {
    batchId: text('batch_id').notNull(),
    chunkNo: integer('chunk_no').notNull(),
    state: text('state').notNull(),
    attempt: integer('attempt').notNull().default(0),
    sentAt: integer('sent_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.batchId, t.chunkNo] }), index('batch_chunks_state').on(t.batchId, t.state)],
);
