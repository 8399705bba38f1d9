/**
 * DATA_DIR on a small tmpfs that fills up mid-batch: uploads answer 507 insufficient_storage,
 * the batch that cannot write its output file stays unfinished (no partial output visible,
 * SQLite intact), and once space returns the batch completes exactly once and uploads work.
 * Needs root (mount -t tmpfs); skipped with the reason otherwise.
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  unlinkSync,
  writeSync,
  statfsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { toFile } from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { chatLines } from '../helpers/batch.js';
import { checkExactlyOnce, FaultStack } from '../helpers/fault.js';

const N = 2000;
const dir = mkdtempSync(path.join(tmpdir(), 'bw-diskfull-'));
const dataDir = path.join(dir, 'data');
mkdirSync(dataDir, { recursive: true });

function tryMount(): string | null {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', dataDir], { stdio: 'pipe' });
    return null;
  } catch (e) {
    return `mount -t tmpfs is not permitted here (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim()}); run as root to test a full DATA_DIR`;
  }
}
const skipReason = tryMount();
if (skipReason) console.warn(`fault-disk-full skipped: ${skipReason}`);

let stack: FaultStack | undefined;
afterAll(async () => {
  await stack?.close();
  if (!skipReason) {
    for (let i = 0; i < 20; i++) {
      try {
        execFileSync('umount', [dataDir], { stdio: 'pipe' });
        break;
      } catch {
        await sleep(250); // an engine that followed its worker out may still hold its log
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** Fills the filesystem of `p` until `leaveBytes` are free (or ENOSPC). */
function fill(file: string, leaveBytes: number): void {
  const fd = openSync(file, 'w');
  const mb = Buffer.alloc(1 << 20, 1);
  const kb = Buffer.alloc(4096, 1);
  try {
    for (;;) {
      const free = Number(statfsSync(path.dirname(file)).bavail) * Number(statfsSync(path.dirname(file)).bsize);
      if (free <= leaveBytes) break;
      writeSync(fd, free - leaveBytes > mb.length * 2 ? mb : kb);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(skipReason !== null)('DATA_DIR full mid-batch', () => {
  it(
    'uploads get 507, nothing partial is visible, SQLite stays intact, and the batch completes once space returns',
    { timeout: 300_000 },
    async () => {
      stack = await FaultStack.start({ dir, slots: 32, ttftMs: 40 });
      const s = stack;
      const input = chatLines(N, s.model);
      const fileId = await s.upload(input);
      const batch = await s.createBatch(fileId, 'disk-full');
      // Near the end of the batch: the remaining results still fit in SQLite's WAL, the output
      // file (~1 MB) does not.
      for (;;) {
        const b = await s.retrieve(batch.id);
        if ((b?.request_counts?.completed ?? 0) >= N * 0.8) break;
        expect(b?.status).not.toBe('completed');
        await sleep(30);
      }
      const filler = path.join(dataDir, 'filler.bin');
      fill(filler, 16 * 1024);

      // Uploads are refused with OpenAI's envelope and a clear code.
      const refused = await s.client.files
        .create({ file: await toFile(Buffer.from(input), 'more.jsonl'), purpose: 'batch' })
        .then(
          () => null,
          (e: { status?: number; code?: string; message?: string }) => e,
        );
      expect(refused?.status).toBe(507);
      expect(refused?.code).toBe('insufficient_storage');

      // While full, the batch cannot finish: it never shows completed or a partial output file.
      const statuses = new Set<string>();
      const until = Date.now() + 8_000;
      while (Date.now() < until) {
        const b = await s.retrieve(batch.id);
        if (b) statuses.add(b.status);
        expect(b?.status).not.toBe('completed');
        expect(b?.status).not.toBe('failed');
        expect(b?.output_file_id ?? null).toBeNull();
        await sleep(200);
      }
      const outputs = await s.client.files.list({ purpose: 'batch_output' });
      expect(outputs.data).toHaveLength(0);
      console.log(`disk full: batch statuses seen while full: ${[...statuses].join(', ')}`);
      {
        const db = new Database(path.join(dataDir, 'db.sqlite'), { readonly: true });
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
        db.close();
      }

      // Space returns: the batch completes, exactly once, and uploads work again.
      unlinkSync(filler);
      let done = batch;
      const deadline = Date.now() + 120_000;
      for (;;) {
        done = (await s.retrieve(batch.id)) ?? done;
        if (['completed', 'failed', 'cancelled', 'expired'].includes(done.status)) break;
        if (Date.now() > deadline) throw new Error(`batch still ${done.status} 120 s after space returned`);
        await sleep(200);
      }
      const out = await s.linesOf(done.output_file_id);
      const err = await s.linesOf(done.error_file_id);
      expect(checkExactlyOnce(N, done, out, err)).toEqual([]);
      const again = await s.upload(input);
      expect(again).toMatch(/^file-/);
      const db = new Database(path.join(dataDir, 'db.sqlite'), { readonly: true });
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      db.close();
      // No temp files left behind by the writes that failed.
      const tmp = path.join(dataDir, 'files', 'tmp');
      expect(existsSync(tmp) ? readdirSync(tmp) : []).toEqual([]);
    },
  );
});
