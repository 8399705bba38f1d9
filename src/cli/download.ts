import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';

export interface Downloaded {
  kind: 'output' | 'error';
  path: string;
  lines: number;
}

/** Streams a file's content to `dest` (temp file + rename: a cut-off download leaves nothing). */
async function saveFile(client: OpenAI, fileId: string, dest: string): Promise<number> {
  const res = await client.files.content(fileId);
  const tmp = `${dest}.part`;
  let lines = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      for (const byte of chunk) if (byte === 0x0a) lines++;
      cb(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as unknown as WebReadableStream), count, createWriteStream(tmp));
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return lines;
}

/** Writes `<batch>_output.jsonl` and `<batch>_error.jsonl` (those the batch has) under `outDir`. */
export async function downloadResults(client: OpenAI, batch: Batch, outDir: string): Promise<Downloaded[]> {
  await mkdir(outDir, { recursive: true });
  const done: Downloaded[] = [];
  for (const [kind, id] of [
    ['output', batch.output_file_id],
    ['error', batch.error_file_id],
  ] as const) {
    if (!id) continue;
    const dest = path.join(outDir, `${batch.id}_${kind}.jsonl`);
    done.push({ kind, path: dest, lines: await saveFile(client, id, dest) });
  }
  return done;
}
