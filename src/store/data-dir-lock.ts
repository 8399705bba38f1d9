import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isProcessAlive } from '../os/process.js';

export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError';
}

/**
 * One control plane per DATA_DIR: two would share a SQLite file and a private Redis (the
 * second used to stop the first one's Redis as if it were left over from a crash). A lock
 * left by a process that died is taken over.
 */
export function lockDataDir(dataDir: string): { release(): void } {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'control-plane.pid');
  try {
    const holder = Number(readFileSync(file, 'utf8').trim());
    if (holder > 0 && holder !== process.pid && isProcessAlive(holder)) {
      throw new DataDirInUseError(
        `DATA_DIR ${dataDir} is in use by another batchwright API (pid ${holder}). Stop it, or give this one its own DATA_DIR (a worker alone needs none: npm run start:worker).`,
      );
    }
  } catch (e) {
    if (e instanceof DataDirInUseError) throw e;
  }
  writeFileSync(file, String(process.pid));
  return {
    release() {
      try {
        if (Number(readFileSync(file, 'utf8').trim()) === process.pid) rmSync(file, { force: true });
      } catch {
        // already gone
      }
    },
  };
}
