import type { Logger } from '../log/logger.js';
import { errorOnlyLine } from '../domain/result-line.js';
import { newFileId } from '../domain/ids.js';
import type { BatchesRepo, BatchRow } from '../store/batches-repo.js';
import type { FilesRepo } from '../store/files-repo.js';
import type { FileStorage } from '../store/file-storage.js';

export interface FinalizeDeps {
  batches: BatchesRepo;
  files: FilesRepo;
  storage: FileStorage;
  log: Logger;
  /** Called inside the transaction that ends the batch (webhooks record their event there). */
  onEnded?: (batchId: string) => void;
}

export type Ending = 'completed' | 'cancelled' | 'expired';

const NOT_RUN = {
  cancelled: { code: 'batch_cancelled', message: 'The batch was cancelled before this request ran.' },
  expired: {
    code: 'batch_expired',
    message: 'The batch expired (its completion window passed) before this request ran.',
  },
  completed: { code: 'request_not_run', message: 'This request was not run.' },
} as const;

const FLUSH_BYTES = 1 << 20;

/** Buffers lines and writes them in 1 MB slices: one await per MB instead of per line. */
class LineSink {
  private buf: string[] = [];
  private size = 0;
  lines = 0;
  constructor(readonly writer: ReturnType<FileStorage['createWriter']>) {}
  async add(line: string): Promise<void> {
    this.buf.push(line, '\n');
    this.size += line.length + 1;
    this.lines += 1;
    if (this.size >= FLUSH_BYTES) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.buf.length === 0) return;
    const s = this.buf.join('');
    this.buf = [];
    this.size = 0;
    await this.writer.write(s);
  }
}

/**
 * Writes the output file (successes) and the error file (failures, and error lines for
 * requests that never ran), then records them and the final status in one transaction.
 * Safe to run again after a crash: nothing is visible until that transaction commits.
 */
export async function finalizeBatch(
  deps: FinalizeDeps,
  batch: BatchRow,
  ending: Ending,
  nowS: () => number,
): Promise<void> {
  const outId = newFileId();
  const errId = newFileId();
  const out = new LineSink(deps.storage.createWriter(outId));
  const err = new LineSink(deps.storage.createWriter(errId));
  const outWriter = out.writer;
  const errWriter = err.writer;
  let notRun = 0;
  try {
    for (const r of deps.batches.iterateRequests(batch.id)) {
      if (r.state === 'done' && r.result !== null) await (r.isError ? err : out).add(r.result);
      else {
        notRun += 1;
        await err.add(errorOnlyLine(r.customId, NOT_RUN[ending].code, NOT_RUN[ending].message));
      }
    }
    await out.flush();
    await err.flush();
  } catch (e) {
    await Promise.allSettled([outWriter.abort(), errWriter.abort()]);
    throw e;
  }
  const outBytes = out.lines > 0 ? await outWriter.commit() : (await outWriter.abort(), 0);
  const errBytes = err.lines > 0 ? await errWriter.commit() : (await errWriter.abort(), 0);

  const now = nowS();
  const expiresAt = batch.outputExpiresAfter ? now + batch.outputExpiresAfter : null;
  const base = batch.id;
  deps.batches.transaction(() => {
    if (out.lines > 0)
      deps.files.insert({
        id: outId,
        bytes: outBytes,
        createdAt: now,
        expiresAt,
        filename: `${base}_output.jsonl`,
        purpose: 'batch_output',
        deletedAt: null,
        owner: batch.owner,
      });
    if (err.lines > 0)
      deps.files.insert({
        id: errId,
        bytes: errBytes,
        createdAt: now,
        expiresAt,
        filename: `${base}_error.jsonl`,
        purpose: 'batch_output',
        deletedAt: null,
        owner: batch.owner,
      });
    const from =
      ending === 'completed'
        ? (['finalizing'] as const)
        : (['in_progress', 'validating', 'cancelling', 'finalizing'] as const);
    const ended = deps.batches.transition(batch.id, from, ending, now, {
      outputFileId: out.lines > 0 ? outId : null,
      errorFileId: err.lines > 0 ? errId : null,
      failed: (deps.batches.get(batch.id)?.failed ?? 0) + notRun,
      ending: null,
    });
    if (ended) deps.onEnded?.(batch.id);
  });
  deps.log.info(
    { batchId: batch.id, ending, outputLines: out.lines, errorLines: err.lines, notRun },
    'batch finalized',
  );
}
