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
    /** The project that uploaded it (null: uploaded with no API keys configured; batch outputs: the batch's). */
    owner: text('owner'),
    idempotencyKey: text('idempotency_key'),
  },
  (t) => [
    index('files_purpose_created').on(t.purpose, t.createdAt),
    index('files_created').on(t.createdAt),
    index('files_idem').on(t.owner, t.idempotencyKey),
  ],
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
    /** The project that created it (null: created with no API keys configured). */
    owner: text('owner'),
  },
  (t) => [
    index('batches_created').on(t.createdAt),
    index('batches_status').on(t.status),
    index('batches_idem').on(t.idempotencyKey),
  ],
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
    /** The engine call's time as the worker measured it (ms), for the dashboard; null if not recorded. */
    latencyMs: integer('latency_ms'),
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

/**
 * API keys. Only a SHA-256 of the secret is stored (keys are 256-bit random, so no slow hash
 * is needed); `prefix` is the first characters of the secret, shown in lists to tell keys apart.
 * Files and batches belong to the key's `project` (the key's own id unless one was given).
 */
export const apiKeys = sqliteTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    project: text('project').notNull(),
    hash: text('hash').notNull(),
    prefix: text('prefix').notNull(),
    /** Operators: the operator API, the dashboard and every project's batches. */
    admin: integer('admin', { mode: 'boolean' }).notNull().default(false),
    createdAt: integer('created_at').notNull(),
    lastUsedAt: integer('last_used_at'),
    revokedAt: integer('revoked_at'),
  },
  (t) => [index('api_keys_hash').on(t.hash)],
);

/** One event to post to a batch's webhook; retried with backoff until delivered or given up. */
export const webhookDeliveries = sqliteTable(
  'webhook_deliveries',
  {
    /** The Standard Webhooks `webhook-id` (the same on every retry). */
    id: text('id').primaryKey(),
    batchId: text('batch_id').notNull(),
    eventType: text('event_type').notNull(),
    url: text('url').notNull(),
    /** The JSON body, exactly as signed and sent. */
    payload: text('payload').notNull(),
    createdAt: integer('created_at').notNull(),
    /** pending → delivered | failed (gave up). */
    state: text('state').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: integer('next_attempt_at').notNull(),
    lastError: text('last_error'),
    deliveredAt: integer('delivered_at'),
  },
  (t) => [
    index('webhook_deliveries_due').on(t.state, t.nextAttemptAt),
    index('webhook_deliveries_batch').on(t.batchId),
  ],
);

/** Answers a user starred in the dashboard's results view (exported as a fine-tuning dataset). */
export const resultStars = sqliteTable(
  'result_stars',
  {
    batchId: text('batch_id').notNull(),
    customId: text('custom_id').notNull(),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.batchId, t.customId] })],
);

/** Benchmark runs recorded per model (bench/ results, or posted by the CLI), for the dashboard. */
export const benchmarkRuns = sqliteTable(
  'benchmark_runs',
  {
    id: text('id').primaryKey(),
    model: text('model').notNull(),
    createdAt: integer('created_at').notNull(),
    /** Free-form name of the benchmark (batch, proxy, ...). */
    kind: text('kind').notNull(),
    requestsPerS: integer('requests_per_s'),
    tokensPerS: integer('tokens_per_s'),
    latencyP50Ms: integer('latency_p50_ms'),
    latencyP95Ms: integer('latency_p95_ms'),
    /** The whole run as JSON (machine info, parameters). */
    details: text('details'),
  },
  (t) => [index('benchmark_runs_model').on(t.model, t.createdAt)],
);
