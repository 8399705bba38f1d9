import type { Redis } from 'ioredis';
import type { Config } from '../config/load.js';
import { concurrencyOf } from '../config/models.js';
import type { Logger } from '../log/logger.js';
import { keys } from '../queue/jobs.js';
import type { BatchesRepo, BatchRow } from '../store/batches-repo.js';
import type { FilesRepo } from '../store/files-repo.js';
import type { FileStorage } from '../store/file-storage.js';
import { errorOnlyLine } from '../domain/result-line.js';
import { createDispatcher } from './dispatcher.js';
import { finalizeBatch, type Ending } from './finalize.js';
import { startResultsConsumer } from './results-consumer.js';
import { DEFAULT_MAX_ERRORS, validateBatchFile } from './validate-batch.js';
import { sweepFiles } from './file-janitor.js';

export interface BatchRunnerDeps {
  config: Config;
  log: Logger;
  redis: Redis;
  batches: BatchesRepo;
  files: FilesRepo;
  storage: FileStorage;
  /** Called inside the transaction that moves a batch to a terminal status (webhooks). */
  onEnded?: (batchId: string) => void;
}

const TICK_MS = 250;
const RECONCILE_MS = 5_000;
const MAX_LINE_BYTES = 16 * 1024 * 1024;
const nowS = () => Math.floor(Date.now() / 1000);

/**
 * The control plane's batch engine room: validates new batches, feeds chunks to workers,
 * stores their results (results-consumer), and closes batches (completed, cancelled,
 * expired). All state lives in SQLite, so a restart resumes every batch where it was.
 * One tick at a time: ticks never overlap, which keeps per-batch decisions race-free.
 */
export function createBatchRunner(deps: BatchRunnerDeps) {
  const { config, log } = deps;
  const env = config.env;
  const k = keys(env.QUEUE_PREFIX);
  const models = new Map(config.models.map((m) => [m.id, m]));
  const dispatcher = createDispatcher({
    redis: deps.redis,
    prefix: env.QUEUE_PREFIX,
    batches: deps.batches,
    storage: deps.storage,
    log,
    chunkSize: env.BATCH_CHUNK_SIZE,
    concurrencyOf: (id) => (models.get(id) ? concurrencyOf(models.get(id)!) : 64),
  });
  const validating = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;
  let wakeAgain = false;
  let lastReconcile = 0;
  let lastSweep = 0;
  let stopped = false;

  const finalizeDeps = { batches: deps.batches, files: deps.files, storage: deps.storage, log, onEnded: deps.onEnded };

  /** validating → failed, with the end event (webhooks) in the same transaction. */
  const failBatch = (batchId: string, errors: unknown[]) =>
    deps.batches.transaction(() => {
      if (deps.batches.transition(batchId, ['validating'], 'failed', nowS(), { errors: JSON.stringify(errors) }))
        deps.onEnded?.(batchId);
    });

  const validate = async (batch: BatchRow) => {
    if (validating.has(batch.id)) return;
    // `batch` may be a stale row: a tick lists batches, then awaits each one's step, and a
    // validation that ended meanwhile has already moved this one to in_progress. Re-read it
    // (synchronously with the delete below, so nothing commits in between): starting over
    // would delete the request rows of a running batch.
    if (deps.batches.get(batch.id)?.status !== 'validating') return;
    validating.add(batch.id);
    try {
      deps.batches.deleteRequests(batch.id); // a validation cut short by a crash starts over
      const file = deps.files.getAny(batch.inputFileId);
      const t0 = performance.now();
      const result = await validateBatchFile(
        deps.storage.pathOf(batch.inputFileId),
        file?.bytes ?? 0,
        batch.endpoint,
        new Set(models.keys()),
        {
          maxRequests: env.MAX_BATCH_REQUESTS,
          maxBytes: env.MAX_BATCH_FILE_BYTES,
          maxLineBytes: MAX_LINE_BYTES,
          maxErrors: DEFAULT_MAX_ERRORS,
          maxEmbeddingInputs: 50_000,
        },
        () => stopped || deps.batches.get(batch.id)?.status !== 'validating',
      );
      if ('cancelled' in result) return;
      if (!result.ok) {
        failBatch(batch.id, result.errors);
        log.info({ batchId: batch.id, errors: result.errors.length }, 'batch failed validation');
        return;
      }
      const t1 = performance.now();
      const started = deps.batches.transaction(() => {
        // Both or neither: a batch cancelled meanwhile must not get request rows.
        if (deps.batches.get(batch.id)?.status !== 'validating') return false;
        deps.batches.insertRequests(batch.id, result.requests);
        return deps.batches.transition(batch.id, ['validating'], 'in_progress', nowS(), {
          model: result.model,
          total: result.requests.length,
        });
      });
      if (!started) return;
      const ms = { readMs: Math.round(t1 - t0), insertMs: Math.round(performance.now() - t1) };
      log.info({ batchId: batch.id, requests: result.requests.length, model: result.model, ...ms }, 'batch validated');
    } catch (e) {
      log.error({ err: e, batchId: batch.id }, 'batch validation failed unexpectedly');
      failBatch(batch.id, [
        {
          code: 'input_file_unreadable',
          message: `The input file could not be read (${(e as Error).message}). Upload it again and create a new batch.`,
          param: 'input_file_id',
          line: null,
        },
      ]);
    } finally {
      validating.delete(batch.id);
      wake();
    }
  };

  const finalize = async (batch: BatchRow, ending: Ending) => {
    // A batch already finalizing is one whose finalize was cut short (a crash, a full disk):
    // it is finalized again, not skipped (the in_progress → finalizing step cannot happen twice).
    const resumed = batch.status === 'finalizing';
    if (ending === 'completed' && !resumed && !deps.batches.transition(batch.id, ['in_progress'], 'finalizing', nowS()))
      return;
    await finalizeBatch(finalizeDeps, batch, ending, nowS);
    await dispatcher.release(batch.id);
    await deps.redis.del(k.cancel(batch.id)).catch(() => undefined);
  };

  /** Requests whose chunk could not be run after every retry get an error line naming why. */
  const failExhausted = (
    batch: BatchRow,
    chunkNo: number,
    reason: string,
    requests: { idx: number; customId: string }[],
  ) => {
    deps.batches.transaction(() => {
      deps.batches.storeResults(
        requests.map((r) => ({
          batchId: batch.id,
          idx: r.idx,
          isError: true,
          line: errorOnlyLine(
            r.customId,
            'engine_unavailable',
            `The request could not be run: ${reason}. Check the engine log of model ${batch.model}.`,
          ),
        })),
      );
      deps.batches.finishChunk(batch.id, chunkNo);
    });
    log.error({ batchId: batch.id, chunkNo, reason, requests: requests.length }, 'chunk failed after every retry');
  };

  const drainAndEnd = async (batch: BatchRow) => {
    const ending: Ending = batch.ending === 'expire' ? 'expired' : 'cancelled';
    await dispatcher.withdrawWaiting(batch);
    if (deps.batches.countQueuedChunks(batch.id) === 0) await finalize(batch, ending);
  };

  const step = async (batch: BatchRow, reconcile: boolean) => {
    if (batch.status === 'validating') {
      if (batch.ending)
        return finalizeBatch(finalizeDeps, batch, batch.ending === 'expire' ? 'expired' : 'cancelled', nowS);
      void validate(batch);
      return;
    }
    if (batch.status === 'finalizing') return finalize(batch, 'completed'); // resumed after a crash
    if (batch.ending) {
      if (reconcile)
        for (const x of await dispatcher.reconcile(batch)) failExhausted(batch, x.chunkNo, x.reason, x.requests);
      return drainAndEnd(batch);
    }
    if (reconcile)
      for (const x of await dispatcher.reconcile(batch)) failExhausted(batch, x.chunkNo, x.reason, x.requests);
    if (await dispatcher.fill(batch)) await finalize(batch, 'completed');
  };

  const expire = async () => {
    const now = nowS();
    for (const b of deps.batches.listByStatus(['validating', 'in_progress'])) {
      if (b.expiresAt > now || b.ending) continue;
      deps.batches.update(b.id, { ending: 'expire' });
      await deps.redis.set(k.cancel(b.id), 'expire', 'EX', 7 * 24 * 3600);
      log.info({ batchId: b.id }, 'batch expired; draining');
    }
  };

  const tick = async () => {
    const reconcile = Date.now() - lastReconcile > RECONCILE_MS;
    if (reconcile) lastReconcile = Date.now();
    if (Date.now() - lastSweep > env.EXPIRY_SWEEP_MS) {
      lastSweep = Date.now();
      await expire();
      await sweepFiles({ files: deps.files, storage: deps.storage, log }, nowS());
    }
    for (const batch of deps.batches.listByStatus(['validating', 'in_progress', 'finalizing', 'cancelling'])) {
      if (stopped) return;
      try {
        await step(batch, reconcile);
      } catch (e) {
        log.error({ err: e, batchId: batch.id }, 'batch step failed; will retry');
      }
    }
  };

  /** Runs a tick now (or right after the current one): ticks never overlap. */
  const wake = () => {
    if (stopped) return;
    if (ticking) {
      wakeAgain = true;
      return;
    }
    ticking = tick()
      .catch((e) => log.error({ err: e }, 'tick failed'))
      .finally(() => {
        ticking = undefined;
        if (wakeAgain) {
          wakeAgain = false;
          setImmediate(wake);
        }
      });
  };

  const consumer = startResultsConsumer({
    redis: deps.redis,
    batches: deps.batches,
    log,
    prefix: env.QUEUE_PREFIX,
    onApplied: () => wake(),
  });

  return {
    start() {
      timer = setInterval(wake, TICK_MS);
      wake();
    },
    wake,
    /** Runs one whole tick (after the one under way, if any) and resolves when it ends: tests step the runner with it. */
    async tickNow(): Promise<void> {
      while (ticking) await ticking;
      wake();
      // wake() has just started a tick: `ticking` is set again (TypeScript narrowed it to undefined above).
      await (ticking as Promise<void> | undefined);
    },
    /** Flags a batch for cancellation; workers skip its remaining requests. */
    async requestCancel(batchId: string) {
      await deps.redis.set(k.cancel(batchId), 'cancel', 'EX', 7 * 24 * 3600);
      wake();
    },
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await ticking;
      await consumer.stop();
      await dispatcher.close();
    },
  };
}

export type BatchRunner = ReturnType<typeof createBatchRunner>;
