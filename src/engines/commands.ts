import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { simDefaults, type ModelConfig } from '../config/models.js';

export interface EngineCommand {
  command: string;
  args: string[];
  /** Extra environment for the engine, on top of the parent's. */
  env: Record<string, string>;
}

/** Engines are only ever bound to loopback: vLLM's dev endpoints are unauthenticated. */
export const ENGINE_HOST = '127.0.0.1';

/** The argv and env that start `model`'s engine listening on `port`. */
export function buildEngineCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  return model.engine === 'vllm' ? buildVllmCommand(model, port, bindHost) : buildSimCommand(model, port, bindHost);
}

/** `vllm serve <path ?? id> --host 127.0.0.1 --port P --served-model-name <id> [options] ...extra_args` */
export function buildVllmCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  const o = model.options;
  const args = ['serve', model.path ?? model.id, '--host', bindHost, '--port', String(port), '--served-model-name', model.id];
  if (o.gpu_memory_utilization !== undefined) args.push('--gpu-memory-utilization', String(o.gpu_memory_utilization));
  if (o.max_model_len !== undefined) args.push('--max-model-len', String(o.max_model_len));
  if (o.max_num_seqs !== undefined) args.push('--max-num-seqs', String(o.max_num_seqs));
  if (o.quantization !== undefined) args.push('--quantization', o.quantization);
  if (o.dtype !== undefined) args.push('--dtype', o.dtype);
  if (o.enforce_eager) args.push('--enforce-eager');
  args.push(...o.extra_args);
  return { command: model.command ?? 'vllm', args, env: { ...o.env } };
}

/**
 * `node --import <tsx loader> <repo>/simulator/main.ts --port P ...`. Both paths are absolute
 * (resolved from this file), so the engine starts whatever the worker's cwd is.
 */
export function buildSimCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  const s = { ...simDefaults, ...model.sim };
  const args = ['--import', tsxLoaderUrl(), simulatorEntry(), '--port', String(port), '--host', bindHost, '--model', model.id];
  args.push('--startup-ms', String(s.startup_ms), '--ttft-ms', String(s.ttft_ms), '--output-tokens', String(s.output_tokens));
  // 0 means "off" for these in models.yaml; only pass them when set, so the flag never
  // changes meaning (the simulator's --crash-after 0 would crash on the first request).
  if (s.tokens_per_second > 0) args.push('--tokens-per-second', String(s.tokens_per_second));
  if (s.max_concurrency > 0) args.push('--max-concurrency', String(s.max_concurrency));
  if (s.error_rate > 0) args.push('--error-rate', String(s.error_rate));
  if (s.crash_after > 0) args.push('--crash-after', String(s.crash_after));
  if (s.ignore_sigterm) args.push('--ignore-sigterm');
  if (model.options.max_model_len !== undefined) args.push('--max-model-len', String(model.options.max_model_len));
  args.push(...model.options.extra_args);
  return { command: model.command ?? process.execPath, args, env: { ...model.options.env } };
}

/** tsx's ESM loader as a file URL, resolved from this package (not from the cwd). */
export function tsxLoaderUrl(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
}

export function simulatorEntry(): string {
  return fileURLToPath(new URL('../../simulator/main.ts', import.meta.url));
}
