import {
  createReadStream,
  createWriteStream,
  mkdirSync,
  readdirSync,
  statSync,
  unlinkSync,
  type ReadStream,
} from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { FILE_ID_RE } from '../domain/ids.js';

/** A write went past its byte limit. The partial file is already gone when this is thrown. */
export class StorageLimitError extends Error {
  override name = 'StorageLimitError';
  readonly code = 'STORAGE_LIMIT';
  constructor(readonly limit: number) {
    super(`file is larger than the limit of ${limit} bytes`);
  }
}

/** The disk (or quota) is full. The partial file is already gone when this is thrown. */
export class StorageFullError extends Error {
  override name = 'StorageFullError';
  readonly code = 'STORAGE_FULL';
  constructor(options?: { cause?: unknown }) {
    super("the server's disk is full", options);
  }
}

/** Streams one file into storage; nothing is visible at pathOf(id) until commit() resolves. */
export interface FileWriter {
  /** Resolves once the chunk is buffered; waits for 'drain' when the stream asks for it. */
  write(chunk: string | Buffer): Promise<void>;
  /** Ends the stream, fsyncs, renames into place. Returns the byte count. */
  commit(): Promise<number>;
  /** Drops the temp file. Safe to call after a failed write or twice. */
  abort(): Promise<void>;
}

export interface FileStorage {
  readonly root: string;
  /** The bytes' path, derived only from the id. Throws on anything that is not a file id. */
  pathOf(id: string): string;
  /** Streams `source` to disk. Throws StorageLimitError past maxBytes, StorageFullError on ENOSPC. */
  save(id: string, source: NodeJS.ReadableStream | Readable, maxBytes: number): Promise<number>;
  createWriter(id: string): FileWriter;
  /** `range.end` is inclusive, as in fs.createReadStream. */
  createReadStream(id: string, range?: { start: number; end: number }): ReadStream;
  size(id: string): Promise<number>;
  /** Deletes the bytes; a missing file is not an error. */
  remove(id: string): Promise<void>;
}

export interface FileStorageOptions {
  /**
   * A temp file untouched for this long at startup is left over from a crash and is deleted.
   * Younger ones may belong to another process sharing DATA_DIR, so they are kept.
   * @defaultValue 15 minutes
   */
  staleTempMs?: number;
}

const isDiskFull = (err: unknown) => {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
};

async function removeQuietly(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** fsync the directory so a rename survives a power cut, not only a process crash. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function cleanStaleTemps(tmpDir: string, staleMs: number): void {
  const cutoff = Date.now() - staleMs;
  for (const name of readdirSync(tmpDir)) {
    if (!name.endsWith('.part')) continue;
    const file = path.join(tmpDir, name);
    try {
      if (statSync(file).mtimeMs <= cutoff) unlinkSync(file);
    } catch {
      // Raced with its owner finishing it; nothing to clean.
    }
  }
}

/** Counts bytes on their way to disk and fails the pipeline the moment the limit is passed. */
function byteLimiter(maxBytes: number, counter: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      counter.bytes += chunk.length;
      if (counter.bytes > maxBytes) return cb(new StorageLimitError(maxBytes));
      cb(null, chunk);
    },
  });
}

/**
 * Bytes on disk under `root`: <root>/<file id> for finished files, <root>/tmp/<id>.part while
 * writing. Writes go to the temp file, are fsynced (`flush: true`) and renamed into place, so a
 * reader never sees half a file. Client-supplied names never reach a path.
 */
export function createFileStorage(root: string, options: FileStorageOptions = {}): FileStorage {
  const absRoot = path.resolve(root);
  const tmpDir = path.join(absRoot, 'tmp');
  mkdirSync(tmpDir, { recursive: true });
  cleanStaleTemps(tmpDir, options.staleTempMs ?? 15 * 60_000);

  const pathOf = (id: string): string => {
    if (!FILE_ID_RE.test(id)) throw new Error(`not a file id: ${JSON.stringify(id.slice(0, 80))}`);
    return path.join(absRoot, id);
  };
  const tempOf = (id: string): string => {
    pathOf(id);
    return path.join(tmpDir, `${id}.part`);
  };

  async function publish(id: string, tmp: string): Promise<void> {
    await rename(tmp, pathOf(id));
    await syncDir(absRoot);
  }

  async function save(id: string, source: NodeJS.ReadableStream | Readable, maxBytes: number): Promise<number> {
    const tmp = tempOf(id);
    const counter = { bytes: 0 };
    // 'wx': never follow or overwrite an existing entry. flush: fsync before close.
    const sink = createWriteStream(tmp, { flags: 'wx', flush: true });
    try {
      await pipeline(source, byteLimiter(maxBytes, counter), sink);
      await publish(id, tmp);
      return counter.bytes;
    } catch (err) {
      // A source that fails at once (a body cut inside the file part) ends the pipeline while
      // the sink may still be opening its file; that late open would create the temp file after
      // the unlink below (the upload fuzzer found such leaks). The sink closes only after it.
      if (!sink.closed) await once(sink, 'close').catch(() => undefined);
      await removeQuietly(tmp);
      if (isDiskFull(err)) throw new StorageFullError({ cause: err });
      throw err;
    }
  }

  function createWriter(id: string): FileWriter {
    const tmp = tempOf(id);
    const ws = createWriteStream(tmp, { flags: 'wx', flush: true });
    let bytes = 0;
    let failure: Error | undefined;
    let done = false;
    ws.on('error', (err) => {
      failure ??= isDiskFull(err) ? new StorageFullError({ cause: err }) : err;
    });
    const abort = async () => {
      done = true;
      if (!ws.destroyed) {
        ws.destroy();
        await once(ws, 'close').catch(() => undefined);
      }
      await removeQuietly(tmp);
    };
    const check = () => {
      if (failure) throw failure;
      if (done) throw new Error(`writer for ${id} is already committed or aborted`);
    };
    return {
      async write(chunk) {
        check();
        bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
        if (!ws.write(chunk)) {
          try {
            await once(ws, 'drain');
          } catch (err) {
            throw failure ?? err;
          }
        }
        check();
      },
      async commit() {
        if (failure) {
          await abort();
          throw failure;
        }
        check();
        done = true;
        try {
          ws.end();
          await finished(ws);
          await publish(id, tmp);
          return bytes;
        } catch (err) {
          await removeQuietly(tmp);
          throw failure ?? (isDiskFull(err) ? new StorageFullError({ cause: err }) : err);
        }
      },
      abort,
    };
  }

  return {
    root: absRoot,
    pathOf,
    save,
    createWriter,
    createReadStream: (id, range) => createReadStream(pathOf(id), range ? { start: range.start, end: range.end } : {}),
    size: async (id) => (await stat(pathOf(id))).size,
    remove: (id) => removeQuietly(pathOf(id)),
  };
}
