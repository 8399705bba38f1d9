import type { Logger } from '../log/logger.js';
import type { FileStorage } from '../store/file-storage.js';
import type { FilesRepo } from '../store/files-repo.js';

export interface FileJanitorDeps {
  files: FilesRepo;
  storage: FileStorage;
  log: Logger;
}

/**
 * One sweep: expired files leave the API (marked deleted), then every deleted file that no
 * active batch reads loses its bytes and its row. Bytes go first, so a failed removal keeps
 * the row and the next sweep retries it.
 */
export async function sweepFiles(deps: FileJanitorDeps, nowS: number): Promise<{ expired: number; purged: number }> {
  let expired = 0;
  for (const row of deps.files.listExpired(nowS)) {
    if (deps.files.markDeleted(row.id, nowS)) expired += 1;
  }
  let purged = 0;
  for (const row of deps.files.listDeletedNotInUse()) {
    // Re-checked per file: a sweep awaits, and the batch runner may have changed state meanwhile.
    if (deps.files.isInputOfActiveBatch(row.id)) continue;
    try {
      await deps.storage.remove(row.id);
      deps.files.purge(row.id);
      purged += 1;
    } catch (err) {
      deps.log.warn({ err, fileId: row.id }, 'could not remove file bytes; will retry');
    }
  }
  if (expired > 0 || purged > 0) deps.log.info({ expired, purged }, 'file sweep');
  return { expired, purged };
}
