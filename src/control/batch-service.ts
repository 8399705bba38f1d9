import { createHash } from 'node:crypto';
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { ApiError } from '../api/errors.js';
import type { CreateBatchBody } from '../api/schemas/batches.js';
import { newBatchId, BATCH_ID_RE } from '../domain/ids.js';
import type { BatchesRepo, BatchRow } from '../store/batches-repo.js';
import type { FilesRepo } from '../store/files-repo.js';
import type { BatchRunner } from './batch-runner.js';
import { canSee, ownerFor, type Principal } from '../auth/principal.js';
import { checkWebhookUrl, parseAllowList } from '../webhooks/ssrf.js';
import { WEBHOOK_METADATA_KEY } from '../webhooks/events.js';

export interface BatchServiceDeps {
  config: Config;
  log: Logger;
  batches: BatchesRepo;
  files: FilesRepo;
  runner: Pick<BatchRunner, 'wake' | 'requestCancel'>;
}

/** How far back a retried create (no Idempotency-Key) is matched to its first copy. */
const RETRY_WINDOW_S = 600;
const nowS = () => Math.floor(Date.now() / 1000);

export interface CreateContext {
  idempotencyKey?: string;
  /** The SDK's x-stainless-retry-count: > 0 means this exact request may already have been applied. */
  retryCount: number;
  /** Who creates it: the batch belongs to its project, and keys are matched within it. */
  principal: Principal | null;
}

/** What a client is told to wait when its project has MAX_ACTIVE_BATCHES running. */
const ACTIVE_LIMIT_RETRY_AFTER_S = 60;

export function createBatchService(deps: BatchServiceDeps) {
  const webhookAllow = parseAllowList(deps.config.env.WEBHOOK_ALLOW_HOSTS);
  /** The SSRF guard's first look (no DNS here: delivery resolves and checks again). */
  const checkWebhook = (body: CreateBatchBody) => {
    const url = body.metadata?.[WEBHOOK_METADATA_KEY];
    if (url === undefined) return;
    const r = checkWebhookUrl(url, webhookAllow);
    if (!r.ok)
      throw new ApiError(
        'invalid_webhook_url',
        `metadata.webhook_url is refused: ${r.reason}. Give a public http(s) URL of your receiver.`,
        `metadata.${WEBHOOK_METADATA_KEY}`,
      );
  };
  const fingerprintOf = (body: CreateBatchBody) =>
    createHash('sha256')
      .update(
        JSON.stringify([
          body.input_file_id,
          body.endpoint,
          body.completion_window,
          body.metadata ?? null,
          body.output_expires_after ?? null,
        ]),
      )
      .digest('hex');

  /** Another project's batch answers exactly like a missing one: its id must not leak. */
  const getOr404 = (id: string, principal: Principal | null): BatchRow => {
    const b = BATCH_ID_RE.test(id) ? deps.batches.get(id) : undefined;
    if (!b || !canSee(principal, b.owner))
      throw new ApiError(
        'batch_not_found',
        `No batch with id ${id}. List your batches with GET /v1/batches.`,
        'batch_id',
      );
    return b;
  };

  return {
    get: getOr404,

    /**
     * Creates a batch (status validating) and wakes the runner. Safe to retry: the same
     * Idempotency-Key returns the first batch; an SDK retry without a key (retry count > 0)
     * returns the batch an identical request created in the last 10 minutes.
     */
    create(body: CreateBatchBody, ctx: CreateContext): BatchRow {
      checkWebhook(body);
      const fingerprint = fingerprintOf(body);
      const owner = ownerFor(ctx.principal);
      if (ctx.idempotencyKey) {
        const prior = deps.batches.findByIdempotencyKey(ctx.idempotencyKey, owner);
        if (prior) {
          if (prior.fingerprint !== fingerprint) {
            throw new ApiError(
              'idempotency_conflict',
              'This Idempotency-Key was used for a different batch request. Use a new key for new parameters.',
              'Idempotency-Key',
            );
          }
          return prior;
        }
      } else if (ctx.retryCount > 0) {
        const prior = deps.batches.findRecentByFingerprint(fingerprint, nowS() - RETRY_WINDOW_S, owner);
        if (prior) return prior;
      }
      const file = deps.files.get(body.input_file_id);
      if (!file || !canSee(ctx.principal, file.owner)) {
        throw new ApiError(
          'file_not_found',
          `No file with id ${body.input_file_id}. Upload the input with POST /v1/files (purpose "batch").`,
          'input_file_id',
        );
      }
      if (file.purpose !== 'batch') {
        throw new ApiError(
          'invalid_file_for_batch',
          `File ${file.id} has purpose "${file.purpose}"; a batch input file must be uploaded with purpose "batch".`,
          'input_file_id',
        );
      }
      const max = deps.config.env.MAX_ACTIVE_BATCHES;
      // No await from here to the insert: two concurrent creates cannot both take the last place.
      if (max > 0 && deps.batches.countActive(owner) >= max) {
        throw new ApiError(
          'too_many_active_batches',
          `This project already has ${max} batches validating, in progress, finalizing or cancelling (MAX_ACTIVE_BATCHES). Wait for some to finish or cancel them, then retry; or put more requests in one batch.`,
          null,
          { 'retry-after': String(ACTIVE_LIMIT_RETRY_AFTER_S) },
        );
      }
      const created = nowS();
      const row = {
        id: newBatchId(),
        endpoint: body.endpoint,
        inputFileId: body.input_file_id,
        completionWindow: body.completion_window,
        status: 'validating',
        createdAt: created,
        expiresAt: created + deps.config.env.COMPLETION_WINDOW_S,
        metadata: body.metadata ? JSON.stringify(body.metadata) : null,
        outputExpiresAfter: body.output_expires_after?.seconds ?? null,
        idempotencyKey: ctx.idempotencyKey ?? null,
        fingerprint,
        owner,
      };
      deps.batches.insert(row);
      deps.log.info({ batchId: row.id, endpoint: row.endpoint, inputFileId: row.inputFileId }, 'batch created');
      deps.runner.wake();
      return deps.batches.get(row.id)!;
    },

    /**
     * validating/in_progress → cancelling (the runner drains, then → cancelled).
     * Cancelling or cancelled again returns the batch unchanged (idempotent);
     * finalizing, completed, failed or expired → 409 batch_not_cancellable.
     */
    async cancel(id: string, principal: Principal | null): Promise<BatchRow> {
      const b = getOr404(id, principal);
      if (b.status === 'cancelling' || b.status === 'cancelled') return b;
      if (!deps.batches.transition(id, ['validating', 'in_progress'], 'cancelling', nowS(), { ending: 'cancel' })) {
        const now = deps.batches.get(id)!;
        if (now.status === 'cancelling') return now;
        throw new ApiError(
          'batch_not_cancellable',
          `Batch ${id} is ${now.status}; only a validating or in_progress batch can be cancelled.`,
          'batch_id',
        );
      }
      await deps.runner.requestCancel(id);
      deps.log.info({ batchId: id }, 'batch cancelling');
      return deps.batches.get(id)!;
    },
  };
}

export type BatchService = ReturnType<typeof createBatchService>;
