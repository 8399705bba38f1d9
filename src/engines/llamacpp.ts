/**
 * The `llamacpp` engine: llama.cpp's own `llama-server` (OpenAI-compatible, CPU, GGUF files),
 * built offline from the source bundle node-llama-cpp ships (scripts/build-llama-server.sh).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { LLAMACPP_DEFAULT_PARALLEL, llamacppDefaults, type ModelConfig } from '../config/models.js';
import { ROOT } from '../paths.js';
import type { EngineCommand } from './engine-command.js';

const LLAMA_DIR = path.join(ROOT, 'node_modules/node-llama-cpp/llama');

/** Context (prompt + output tokens) of one request when options.max_model_len is not set. */
export const LLAMACPP_DEFAULT_CTX = 2048;

/**
 * The cache folder scripts/build-llama-server.sh builds into: $LLAMA_CACHE_DIR, else
 * ~/.cache/batchwright/llama.cpp-<release tag>-<bundle size>. Keep the two in step.
 */
export function llamaCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env['LLAMA_CACHE_DIR']) return env['LLAMA_CACHE_DIR'];
  const bundle = path.join(LLAMA_DIR, 'gitRelease.bundle');
  if (!existsSync(bundle)) return null;
  let tag = '';
  try {
    tag = (JSON.parse(readFileSync(path.join(LLAMA_DIR, 'llama.cpp.info.json'), 'utf8')) as { tag?: string }).tag ?? '';
  } catch {
    /* no info file: "unknown", as the script */
  }
  return path.join(homedir(), '.cache/batchwright', `llama.cpp-${tag || 'unknown'}-${statSync(bundle).size}`);
}

/** The cached build's binary, or null when it has not been built. */
export function cachedLlamaServer(env: NodeJS.ProcessEnv = process.env): string | null {
  const dir = llamaCacheDir(env);
  const bin = dir && path.join(dir, 'build/bin/llama-server');
  return bin && existsSync(bin) ? bin : null;
}

/** model.command, else $LLAMA_SERVER, else the cached build, else `llama-server` on PATH. */
export function llamaServerBinary(model: Pick<ModelConfig, 'command'>, env: NodeJS.ProcessEnv = process.env): string {
  return model.command ?? (env['LLAMA_SERVER'] || null) ?? cachedLlamaServer(env) ?? 'llama-server';
}

/**
 * `llama-server -m <gguf> --host H --port P -t T -tb T -np N -c <ctx × N> --alias <id>
 * --threads-http <≥ N> --jinja ...extra_args`. llama-server splits -c across its -np slots, so -c
 * is max_model_len (default 2048) times the slots: each request gets max_model_len. A relative
 * GGUF path is resolved against the worker's cwd; a `builtin:` path is passed on as the
 * embedded engine does (the worker resolves it to the generated file before the engine starts).
 */
export function buildLlamacppCommand(
  model: ModelConfig,
  port: number,
  bindHost: string,
  env: NodeJS.ProcessEnv = process.env,
): EngineCommand {
  const o = model.options;
  const l = { ...llamacppDefaults, ...model.llamacpp };
  const parallel = l.parallel ?? o.max_num_seqs ?? LLAMACPP_DEFAULT_PARALLEL;
  const ctx = (o.max_model_len ?? LLAMACPP_DEFAULT_CTX) * parallel;
  const gguf = model.path ?? model.id;
  const args = [
    '-m',
    gguf.startsWith('builtin:') ? gguf : path.resolve(gguf),
    '--host',
    bindHost,
    '--port',
    String(port),
  ];
  args.push('-t', String(l.threads), '-tb', String(l.threads), '-np', String(parallel), '-c', String(ctx));
  // Fewer HTTP threads than concurrent requests showed a 3 s tail on keep-alive connections.
  args.push('--alias', model.id, '--threads-http', String(Math.max(parallel, 8)), '--jinja');
  args.push(...o.extra_args);
  return { command: llamaServerBinary(model, env), args, env: { ...o.env } };
}
