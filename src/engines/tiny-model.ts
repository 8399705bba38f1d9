/**
 * The demo model: a tiny llama GGUF generated at first start (scripts/gen-tiny-gguf.mjs, ~0.2 s,
 * 570 KB, byte-identical every time) instead of downloaded. In "cycle" mode every chat answer is
 * exactly "abcdefghijklmnopqrstuvwxyz", so tests can assert exact text.
 *
 * models.yaml names it `path: builtin:tiny-cycle` (engine: embedded); the worker calls
 * prepareBuiltinModels() before starting its ModelManager, which writes the file once into
 * DATA_DIR/models/ and hands the engines its absolute path.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { BUILTIN_PREFIX, type ModelConfig } from '../config/models.js';
import type { Logger } from '../log/logger.js';
import { ROOT } from '../paths.js';

const execFileAsync = promisify(execFile);

export const TINY_MODEL_FILE = 'tiny-cycle.gguf';

export function tinyModelPath(dataDir: string): string {
  return path.join(dataDir, 'models', TINY_MODEL_FILE);
}

export function tinyModelScript(): string {
  return path.join(ROOT, 'scripts/gen-tiny-gguf.mjs');
}

/**
 * Writes DATA_DIR/models/tiny-cycle.gguf unless it exists, and returns its path. Atomic: the
 * generator writes a temp file in the same folder that is renamed into place, so a reader
 * (or a second worker on the same DATA_DIR) never sees a partial file.
 */
export async function ensureTinyModel(dataDir: string): Promise<string> {
  const target = tinyModelPath(dataDir);
  if (existsSync(target)) return target;
  await mkdir(path.dirname(target), { recursive: true });
  const tmp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await execFileAsync(process.execPath, [tinyModelScript(), tmp, '--mode', 'cycle'], { timeout: 60_000 });
    await rename(tmp, target);
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`cannot generate the builtin model ${target}: ${e.stderr?.trim() || e.message}`, { cause: err });
  } finally {
    await rm(tmp, { force: true });
  }
  return target;
}

/**
 * The models with every `path: builtin:<name>` replaced by the generated file's absolute path
 * (generating it first). A model whose file cannot be made keeps its `builtin:` path, with the
 * error logged: its engine then fails to start with a message, the other models are unaffected.
 */
export async function prepareBuiltinModels(
  models: readonly ModelConfig[],
  dataDir: string,
  log?: Logger,
): Promise<ModelConfig[]> {
  const out: ModelConfig[] = [];
  for (const m of models) {
    if (!m.path?.startsWith(BUILTIN_PREFIX)) {
      out.push(m);
      continue;
    }
    try {
      // BUILTIN_MODELS has one entry today; the schema rejects any other name.
      out.push({ ...m, path: await ensureTinyModel(dataDir) });
    } catch (err) {
      log?.error({ err, model: m.id }, 'builtin model could not be generated; its engine will not start');
      out.push(m);
    }
  }
  return out;
}
