import { z } from 'zod';
import { BATCH_ENDPOINTS } from '../../domain/batch-status.js';
import type { BatchRow } from '../../store/batches-repo.js';

const metadata = z
  .record(
    z.string().max(64, 'metadata keys are at most 64 characters'),
    z.string().max(512, 'metadata values are at most 512 characters'),
  )
  .refine((m) => Object.keys(m).length <= 16, 'metadata has at most 16 pairs');

export const createBatchBody = z
  .object({
    input_file_id: z
      .string({ error: 'input_file_id is required: upload a JSONL file with purpose "batch" first' })
      .min(1)
      .max(200, 'input_file_id is a file id from POST /v1/files (file-…), at most 200 characters'),
    endpoint: z.enum(BATCH_ENDPOINTS, { error: `endpoint must be one of ${BATCH_ENDPOINTS.join(', ')}` }),
    completion_window: z.literal('24h', { error: 'completion_window must be "24h"' }),
    metadata: metadata.nullish(),
    output_expires_after: z
      .object({
        anchor: z.literal('created_at', { error: 'output_expires_after.anchor must be "created_at"' }),
        seconds: z.number().int().min(3600).max(2_592_000),
      })
      .strict()
      .nullish(),
  })
  .strict();
export type CreateBatchBody = z.infer<typeof createBatchBody>;

export const listBatchesQuery = z.object({
  after: z.string().min(1).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
});

/** The wire Batch object: every key, in OpenAI's order, null where unset. */
export function toBatchObject(b: BatchRow) {
  const errors = b.errors ? (JSON.parse(b.errors) as unknown[]) : null;
  return {
    id: b.id,
    object: 'batch' as const,
    endpoint: b.endpoint,
    model: b.model,
    errors: errors ? { object: 'list', data: errors } : null,
    input_file_id: b.inputFileId,
    completion_window: b.completionWindow,
    status: b.status,
    output_file_id: b.outputFileId,
    error_file_id: b.errorFileId,
    created_at: b.createdAt,
    in_progress_at: b.inProgressAt,
    expires_at: b.expiresAt,
    finalizing_at: b.finalizingAt,
    completed_at: b.completedAt,
    failed_at: b.failedAt,
    expired_at: b.expiredAt,
    cancelling_at: b.cancellingAt,
    cancelled_at: b.cancelledAt,
    request_counts: { total: b.total, completed: b.completed, failed: b.failed },
    usage: {
      input_tokens: b.inputTokens,
      input_tokens_details: { cached_tokens: b.cachedTokens },
      output_tokens: b.outputTokens,
      output_tokens_details: { reasoning_tokens: b.reasoningTokens },
      total_tokens: b.inputTokens + b.outputTokens,
    },
    metadata: b.metadata ? (JSON.parse(b.metadata) as Record<string, string>) : null,
  };
}
