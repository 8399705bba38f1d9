import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { embeddedDefaults, EMBEDDED_DEFAULT_PARALLEL, simDefaults, type ModelConfig } from '../config/models.js';
import { COMPILED, DIST, ROOT } from '../paths.js';
import type { EngineCommand } from './engine-command.js';
import { buildLlamacppCommand } from './llamacpp.js';

/** Engines are only ever bound to loopback: vLLM's dev endpoints are unauthenticated. */
export const ENGINE_HOST = '127.0.0.1';

/** The argv and env that start `model`'s engine listening on `port`. */
export function buildEngineCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  if (model.engine === 'embedded') return buildEmbeddedCommand(model, port, bindHost);
  if (model.engine === 'llamacpp') return buildLlamacppCommand(model, port, bindHost);
  return model.engine === 'vllm' ? buildVllmCommand(model, port, bindHost) : buildSimCommand(model, port, bindHost);
}

/** `vllm serve <path ?? id> --host 127.0.0.1 --port P --served-model-name <id> [options] ...extra_args` */
export function buildVllmCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  const o = model.options;
  const sleep = (o.sleep_mode ?? 'off') !== 'off';
  // Dev mode (which sleep mode needs) opens unauthenticated /sleep, /wake_up and /collective_rpc:
  // such an engine listens on loopback only, whatever ENGINE_BIND_HOST says, and a --host in
  // extra_args (argparse: the last one wins) is dropped. VLLM_SERVER_DEV_MODE is an int to vLLM.
  const devModeEnv = o.env['VLLM_SERVER_DEV_MODE'];
  const devMode = sleep || (devModeEnv !== undefined && devModeEnv.trim() !== '' && Number(devModeEnv) !== 0);
  const extra = devMode
    ? o.extra_args.filter((a, i) => a !== '--host' && !a.startsWith('--host=') && o.extra_args[i - 1] !== '--host')
    : o.extra_args;
  const args = [
    'serve',
    model.path ?? model.id,
    '--host',
    devMode ? ENGINE_HOST : bindHost,
    '--port',
    String(port),
    '--served-model-name',
    model.id,
  ];
  if (o.gpu_memory_utilization !== undefined) args.push('--gpu-memory-utilization', String(o.gpu_memory_utilization));
  if (o.max_model_len !== undefined) args.push('--max-model-len', String(o.max_model_len));
  if (o.max_num_seqs !== undefined) args.push('--max-num-seqs', String(o.max_num_seqs));
  if (o.quantization !== undefined) args.push('--quantization', o.quantization);
  if (o.dtype !== undefined) args.push('--dtype', o.dtype);
  if (o.enforce_eager) args.push('--enforce-eager');
  if (sleep && !extra.includes('--enable-sleep-mode')) args.push('--enable-sleep-mode');
  args.push(...extra);
  return { command: model.command ?? 'vllm', args, env: { ...o.env, ...(sleep && { VLLM_SERVER_DEV_MODE: '1' }) } };
}

/**
 * `node <repo>/dist/simulator.js --port P ...` when this code is compiled, `node --import <tsx
 * loader> <repo>/simulator/main.ts --port P ...` from source (see nodeEntryArgs). The paths are
 * absolute (resolved from this file), so the engine starts whatever the worker's cwd is.
 */
export function buildSimCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  const s = { ...simDefaults, ...model.sim };
  const args = [...nodeEntryArgs(simulatorEntry()), '--port', String(port), '--host', bindHost, '--model', model.id];
  args.push(
    '--startup-ms',
    String(s.startup_ms),
    '--ttft-ms',
    String(s.ttft_ms),
    '--output-tokens',
    String(s.output_tokens),
  );
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

/**
 * Node's arguments before an engine's own, for one of our entry points: the compiled JavaScript
 * runs with plain `node` (tsx, a devDependency, may not be installed); the TypeScript source
 * (tests, `npm run sim`, dev) runs through tsx's loader. Which one is decided by where this
 * code runs from (COMPILED: dist/), so a compiled worker never spawns TypeScript and a worker
 * run from source never spawns a stale build.
 */
export function nodeEntryArgs(entry: string): string[] {
  return COMPILED ? [entry] : ['--import', tsxLoaderUrl(), entry];
}

export function simulatorEntry(): string {
  return COMPILED ? path.join(DIST, 'simulator.js') : path.join(ROOT, 'simulator/main.ts');
}

/**
 * `node <repo>/dist/engine-embedded.js --port P --host H --model ID --gguf FILE --threads T
 * --parallel N [--ctx max_model_len] ...extra_args` (from source: `node --import <tsx loader>
 * <repo>/src/engines/embedded/main.ts ...`, as for the simulator). A relative GGUF path is
 * resolved against the worker's cwd. `builtin:` paths must already be resolved to a file
 * (prepareBuiltinModels in tiny-model.ts, at worker start); one that is not makes the engine exit
 * with a message that says so.
 */
export function buildEmbeddedCommand(model: ModelConfig, port: number, bindHost: string = ENGINE_HOST): EngineCommand {
  const o = model.options;
  const e = { ...embeddedDefaults, ...model.embedded };
  const gguf = model.path ?? model.id;
  const args = [...nodeEntryArgs(embeddedEntry()), '--port', String(port), '--host', bindHost, '--model', model.id];
  args.push('--gguf', gguf.startsWith('builtin:') ? gguf : path.resolve(gguf));
  args.push('--threads', String(e.threads), '--parallel', String(o.max_num_seqs ?? EMBEDDED_DEFAULT_PARALLEL));
  if (o.max_model_len !== undefined) args.push('--ctx', String(o.max_model_len));
  args.push(...o.extra_args);
  return { command: model.command ?? process.execPath, args, env: { ...o.env } };
}

export function embeddedEntry(): string {
  return COMPILED ? path.join(DIST, 'engine-embedded.js') : path.join(ROOT, 'src/engines/embedded/main.ts');
}
