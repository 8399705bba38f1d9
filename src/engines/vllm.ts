/**
 * Everything vLLM-specific except its argv (commands.ts builds that): the version gate, the
 * free-GPU-memory check before a start, the real concurrency read after one, and sleep mode
 * (sleep on eviction, wake instead of a cold start). The ModelManager calls these through one
 * VllmSupport per manager; the parsing and decision functions are pure and unit-tested.
 *
 * Facts relied on (docs: docs/notes/engines.md):
 * - `--gpu-memory-utilization` is a fraction of the GPU's TOTAL memory, and vLLM exits when
 *   that much is not free at start. Drivers release a stopped engine's memory late.
 * - Releases before 0.22.0 have a Host-header authentication bypass.
 * - The real concurrency ceiling is the KV cache: "Maximum concurrency for 8,192 tokens per
 *   request: 21.51x" at start-up; `/metrics` has `vllm:cache_config_info{num_gpu_blocks,block_size}`.
 * - Sleep mode (`--enable-sleep-mode`, env VLLM_SERVER_DEV_MODE=1): POST /sleep?level=1|2,
 *   POST /wake_up, GET /is_sleeping. Dev mode also opens unauthenticated /collective_rpc, so
 *   such engines listen on 127.0.0.1 only (commands.ts) and the API proxy never forwards
 *   anything but /v1/chat/completions, /v1/completions and /v1/embeddings.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import { request } from 'undici';
import type { ModelConfig } from '../config/models.js';
import type { Logger } from '../log/logger.js';
import { delay } from './async-utils.js';
import { EngineError } from './errors.js';
import {
  memoryShortfall,
  queryGpuProcesses,
  visibleGpus,
  type GpuProcess,
  type GpuQuery,
  type GpuReading,
} from './gpu.js';

// ---------------------------------------------------------------------------------------------
// Version gate

/** The first release without the Host-header authentication bypass. */
export const MIN_VLLM_VERSION = '0.22.0';

/** A PEP 440 version (what Python packages, vLLM included, report). */
export interface PyVersion {
  release: number[];
  /** [phase (a=0, b=1, rc=2), number] */
  pre: [number, number] | null;
  post: number | null;
  dev: number | null;
}

const PEP440 =
  /^v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d*))?(?:[-_.]?(dev)[-_.]?(\d*))?(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$/i;

/** Parses a PEP 440 version ("0.22.0", "0.10.1rc1", "0.8.5.post1", "0.11.1.dev12+g1a2b3c.cu128"); null if it is none. */
export function parseVersion(text: string): PyVersion | null {
  const m = PEP440.exec(text.trim());
  if (!m) return null;
  const phase = m[2]?.toLowerCase();
  const pre: [number, number] | null =
    phase === undefined
      ? null
      : [phase === 'a' || phase === 'alpha' ? 0 : phase === 'b' || phase === 'beta' ? 1 : 2, Number(m[3] || 0)];
  const post = m[4] !== undefined ? Number(m[4]) : m[5] !== undefined ? Number(m[6] || 0) : null;
  const dev = m[7] !== undefined ? Number(m[8] || 0) : null;
  return { release: m[1]!.split('.').map(Number), pre, post, dev };
}

/** PEP 440 order: 1.0.dev1 < 1.0a1 < 1.0rc1.dev1 < 1.0rc1 < 1.0 < 1.0.post1. The local part (+…) is ignored. */
export function compareVersions(a: string, b: string): number {
  const va = parseVersion(a);
  const vb = parseVersion(b);
  if (!va || !vb) throw new Error(`not a version: ${JSON.stringify(va ? b : a)}`);
  const n = Math.max(va.release.length, vb.release.length);
  for (let i = 0; i < n; i++) {
    const d = (va.release[i] ?? 0) - (vb.release[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  const key = (v: PyVersion) => [
    ...(v.pre ?? (v.post === null && v.dev !== null ? [-1, 0] : [3, 0])),
    v.post ?? -1,
    v.dev ?? Number.POSITIVE_INFINITY,
  ];
  const ka = key(va);
  const kb = key(vb);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
  return 0;
}

/**
 * The version in `vllm --version` output: the last line that is a version (optionally after
 * "vllm" or "vLLM version"); log lines vLLM prints first ("Automatically detected platform
 * cuda.") are skipped.
 */
export function findVllmVersion(output: string): string | null {
  const lines = stripAnsi(output)
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean)
    .reverse();
  for (const line of lines) {
    const m = /^(?:vllm(?:\s+version)?[\s:]+)?(v?\d+\.\d+\S*)$/i.exec(line);
    if (m && parseVersion(m[1]!)) return m[1]!.replace(/^v/, '');
  }
  return null;
}

export type VersionVerdict =
  | { kind: 'ok'; version: string }
  | { kind: 'refused'; version: string; message: string }
  | { kind: 'unknown'; reason: string };

/** What to do with the output of `vllm --version` (pure). */
export function judgeVllmVersion(output: string): VersionVerdict {
  const version = findVllmVersion(output);
  if (!version)
    return {
      kind: 'unknown',
      reason: `no version in its output: ${JSON.stringify(stripAnsi(output).trim().slice(0, 200))}`,
    };
  if (compareVersions(version, MIN_VLLM_VERSION) >= 0) return { kind: 'ok', version };
  return {
    kind: 'refused',
    version,
    message: `vLLM ${version} has a Host-header authentication bypass (fixed in ${MIN_VLLM_VERSION}); upgrade with pip install -U vllm`,
  };
}

/** Runs `<command> --version` (vLLM imports torch: allow it time). Never throws. */
export function runVllmVersion(command: string, env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<VersionVerdict> {
  return new Promise((resolve) => {
    execFile(command, ['--version'], { env, timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        const why =
          e.code === 'ENOENT'
            ? 'not found'
            : e.killed
              ? `no answer in ${Math.round(timeoutMs / 1000)} s`
              : `failed (${e.message.split('\n')[0]})`;
        return resolve({ kind: 'unknown', reason: `${command} --version ${why}` });
      }
      const verdict = judgeVllmVersion(String(stdout));
      resolve(
        verdict.kind === 'unknown' && String(stderr).trim()
          ? judgeVllmVersion(`${String(stdout)}\n${String(stderr)}`)
          : verdict,
      );
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Real capacity (KV cache)

const ANSI = /\x1b\[[0-9;]*m/g; // eslint-disable-line no-control-regex
const stripAnsi = (s: string) => s.replace(ANSI, '');
const toNumber = (s: string) => Number(s.replace(/[,_]/g, ''));

export interface KvConcurrency {
  /** Requests of `tokensPerRequest` tokens that fit in the KV cache at once (summed over data-parallel ranks). */
  maxConcurrency: number;
  tokensPerRequest: number;
}

/**
 * Reads vLLM's start-up line "Maximum concurrency for 8,192 tokens per request: 21.51x"
 * (V1 engine; V0 printed "for 4096 tokens"). The last line per data-parallel rank counts
 * ("(EngineCore_DP1 pid=…) INFO …"), summed over ranks. null when no such line.
 */
export function parseMaxConcurrency(output: string | readonly string[]): KvConcurrency | null {
  const lines = typeof output === 'string' ? output.split(/\r?\n/) : output;
  const perRank = new Map<string, KvConcurrency>();
  for (const raw of lines) {
    const line = stripAnsi(raw);
    const m = /Maximum concurrency for ([\d,_]+) tokens per request:\s*([\d.]+)\s*x/i.exec(line);
    if (!m) continue;
    const x = Number(m[2]);
    if (!Number.isFinite(x)) continue;
    perRank.set(/(?:\b|_)DP(\d+)\b/.exec(line)?.[1] ?? '', { maxConcurrency: x, tokensPerRequest: toNumber(m[1]!) });
  }
  if (perRank.size === 0) return null;
  const all = [...perRank.values()];
  return {
    maxConcurrency: all.reduce((s, c) => s + c.maxConcurrency, 0),
    tokensPerRequest: all[all.length - 1]!.tokensPerRequest,
  };
}

/** "GPU KV cache size: 175,920 tokens" (V1 engine), summed over data-parallel ranks; null when absent. */
export function parseKvCacheTokens(output: string): number | null {
  const perRank = new Map<string, number>();
  for (const raw of output.split(/\r?\n/)) {
    const line = stripAnsi(raw);
    const m = /GPU KV cache size:\s*([\d,_]+)\s*tokens/i.exec(line);
    if (m) perRank.set(/(?:\b|_)DP(\d+)\b/.exec(line)?.[1] ?? '', toNumber(m[1]!));
  }
  return perRank.size ? [...perRank.values()].reduce((a, b) => a + b, 0) : null;
}

/** KV cache tokens from `/metrics`: `vllm:cache_config_info{…num_gpu_blocks="N",block_size="B"…} 1.0` → N × B. */
export function parseCacheConfigInfo(metrics: string): number | null {
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('vllm:cache_config_info{')) continue;
    const blocks = /num_gpu_blocks="(\d+)"/.exec(line)?.[1];
    const size = /block_size="(\d+)"/.exec(line)?.[1];
    if (blocks && size) return Number(blocks) * Number(size);
  }
  return null;
}

/** Requests to keep in flight: max_num_seqs, capped by what the KV cache holds (never below 1). */
export function effectiveConcurrency(maxNumSeqs: number, kvConcurrency: number | null): number {
  if (kvConcurrency === null || !Number.isFinite(kvConcurrency)) return maxNumSeqs;
  return Math.max(1, Math.min(maxNumSeqs, Math.floor(kvConcurrency)));
}

/** The lines of the last start in an engine log (after EngineProcess's "--- <time> starting …" header). */
export function linesOfLastStart(logText: string): string[] {
  const lines = logText.split('\n');
  for (let i = lines.length - 1; i >= 0; i--)
    if (/^--- \d{4}-\d\d-\d\dT\S+ starting /.test(lines[i]!)) return lines.slice(i + 1);
  return lines;
}

async function readTail(file: string, maxBytes: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Free GPU memory

/** GPUs one engine uses: tensor × pipeline × data parallel sizes from extra_args (1 when unset). */
export function parallelSize(args: readonly string[]): number {
  const flags: Record<string, string[]> = {
    tp: ['--tensor-parallel-size', '-tp'],
    pp: ['--pipeline-parallel-size', '-pp'],
    dp: ['--data-parallel-size', '-dp'],
  };
  let n = 1;
  for (const names of Object.values(flags)) {
    let v = 1;
    args.forEach((a, i) => {
      for (const f of names) {
        if (a === f && args[i + 1] !== undefined) v = Number(args[i + 1]);
        else if (a.startsWith(`${f}=`)) v = Number(a.slice(f.length + 1));
      }
    });
    n *= Number.isInteger(v) && v > 0 ? v : 1;
  }
  return n;
}

export type MemoryDecision =
  | { kind: 'ok'; gpus: GpuReading[] }
  /** Cannot tell (no nvidia-smi, driver error, devices it does not list): let vLLM try. */
  | { kind: 'unknown'; reason: string }
  | { kind: 'short'; gpus: GpuReading[]; short: { gpu: GpuReading; neededMiB: number }[] };

export interface MemoryNeed {
  /** CUDA_VISIBLE_DEVICES of the engine (undefined: every GPU). */
  cudaVisibleDevices: string | undefined;
  /** gpu_memory_utilization (vLLM's default 0.9 when unset). */
  utilization: number;
  /** GPUs the engine uses: the first this many visible ones (see parallelSize). */
  gpuCount: number;
  /** Memory the engine itself already holds, per GPU uuid (a sleeping engine about to wake). */
  heldMiB?: ReadonlyMap<string, number>;
}

/** Whether gpu_memory_utilization × total is free on each GPU the engine will use (pure). */
export function decideGpuMemory(q: GpuQuery, need: MemoryNeed): MemoryDecision {
  if (!q.ok) return { kind: 'unknown', reason: q.reason };
  if (q.gpus.length === 0) return { kind: 'unknown', reason: 'nvidia-smi lists no GPU' };
  const visible = visibleGpus(q.gpus, need.cudaVisibleDevices);
  if (visible.length === 0) {
    return {
      kind: 'unknown',
      reason: `CUDA_VISIBLE_DEVICES=${need.cudaVisibleDevices} names no GPU nvidia-smi lists (it lists ${q.gpus.map((g) => `${g.index} ${g.uuid}`).join(', ')})`,
    };
  }
  const gpus = visible.slice(0, Math.max(1, need.gpuCount));
  const credited = gpus.map((g) => ({ ...g, memoryFreeMiB: g.memoryFreeMiB + (need.heldMiB?.get(g.uuid) ?? 0) }));
  const short = memoryShortfall(credited, need.utilization).map((s) => ({
    gpu: gpus[credited.indexOf(s.gpu)]!,
    neededMiB: s.neededMiB - (need.heldMiB?.get(s.gpu.uuid) ?? 0),
  }));
  return short.length ? { kind: 'short', gpus, short } : { kind: 'ok', gpus };
}

const fmt = (n: number) => n.toLocaleString('en-US');

/**
 * "GPU 0 (NVIDIA RTX 4080) has 2,966 MiB free of 16,376 MiB; model X needs 0.9 × 16,376 =
 * 14,739 MiB. Another process holds it: pid 4242 (python3, 13,380 MiB)." — one sentence per
 * GPU that falls short. `owner` names our own engines' processes.
 */
export function describeShortfall(
  model: string,
  utilization: number,
  short: readonly { gpu: GpuReading; neededMiB: number }[],
  processes: readonly GpuProcess[],
  owner: (pid: number) => string | null = () => null,
): string {
  return short
    .map(({ gpu, neededMiB }) => {
      const head = `GPU ${gpu.index} (${gpu.name}) has ${fmt(gpu.memoryFreeMiB)} MiB free of ${fmt(gpu.memoryTotalMiB)} MiB; model ${model} needs ${utilization} × ${fmt(gpu.memoryTotalMiB)} = ${fmt(neededMiB)} MiB.`;
      const holders = processes.filter((p) => p.gpuUuid === gpu.uuid);
      if (holders.length === 0)
        return `${head} nvidia-smi lists no process holding it (processes of other containers are not listed; a stopped engine's memory may still be being released).`;
      const list = holders
        .map((p) => `pid ${p.pid} (${owner(p.pid) ?? p.name}${p.usedMiB === null ? '' : `, ${fmt(p.usedMiB)} MiB`})`)
        .join(', ');
      return `${head} ${holders.length === 1 ? 'Another process holds it' : 'Other processes hold it'}: ${list}.`;
    })
    .join(' ');
}

/** The process group of a pid (Linux /proc), or null. Our engines lead their own groups. */
export function processGroupOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
    return Number.isInteger(pgrp) ? pgrp : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Sleep mode

export type SleepMode = 'off' | 'level1' | 'level2';

/** The model's sleep mode; always 'off' for engines other than vLLM. */
export function sleepModeOf(model: ModelConfig): SleepMode {
  return model.engine === 'vllm' ? (model.options.sleep_mode ?? 'off') : 'off';
}

/**
 * Level 1 keeps the weights in host RAM (fast wake) while the budget allows; otherwise, or
 * when the need is unknown, level 2 (weights dropped, reloaded from disk on wake).
 */
export function chooseSleepLevel(
  mode: Exclude<SleepMode, 'off'>,
  needMiB: number | null,
  budgetMiB: number,
  inUseMiB: number,
): 1 | 2 {
  if (mode === 'level2' || needMiB === null) return 2;
  return inUseMiB + needMiB <= budgetMiB ? 1 : 2;
}

/** Default HOST_RAM_BUDGET_MB: half of this machine's memory. */
export function defaultHostRamBudgetMiB(): number {
  return Math.floor(os.totalmem() / 2 ** 20 / 2);
}

async function call(
  baseUrl: string,
  method: 'GET' | 'POST',
  path: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ status: number; body: string }> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const res = await request(`${baseUrl}${path}`, {
    method,
    reset: true, // no keep-alive socket left behind to an engine that may be stopped next
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
  });
  return { status: res.statusCode, body: await res.body.text() };
}

/** GET /is_sleeping → true/false, or null when the engine does not say. */
async function isSleeping(baseUrl: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean | null> {
  try {
    const r = await call(baseUrl, 'GET', '/is_sleeping', timeoutMs, signal);
    const v = r.status === 200 ? (JSON.parse(r.body) as { is_sleeping?: unknown }).is_sleeping : undefined;
    return typeof v === 'boolean' ? v : null;
  } catch {
    signal?.throwIfAborted();
    return null;
  }
}

function httpError(what: string, r: { status: number; body: string }): Error {
  return new Error(`${what} answered HTTP ${r.status}: ${r.body.replace(/\s+/g, ' ').slice(0, 300)}`);
}

// ---------------------------------------------------------------------------------------------
// Per-manager state and the ModelManager's hooks

export interface VllmSupportOptions {
  log: Logger;
  /** nvidia-smi to run (tests point it at a fake). */
  nvidiaSmi: string;
  queryGpus: (nvidiaSmi: string) => Promise<GpuQuery>;
  /** Longest wait for free GPU memory before ENGINE_GPU_MEMORY. */
  gpuMemoryWaitMs: number;
  gpuMemoryPollMs: number;
  /** Host RAM level-1 sleepers may hold together (MiB). */
  hostRamBudgetMiB: number;
  /** The manager's engines, to name our own processes in memory messages. */
  engines: () => readonly { model: string; pid: number | null; state: string }[];
  /** Timeout of `vllm --version`. @defaultValue 120_000 */
  versionTimeoutMs?: number;
  /** Timeout of POST /sleep and of POST /wake_up. @defaultValue 120_000 */
  sleepTimeoutMs?: number;
}

interface SleepRecord {
  level: 1 | 2;
  /** Host RAM the weights take at level 1 (estimate); 0 at level 2. */
  hostRamMiB: number;
  concurrency: number;
  /** GPU memory the sleeping engine still holds, per GPU uuid (measured around the sleep). */
  heldMiB: Map<string, number>;
}

export interface GpuWaitContext {
  cudaVisibleDevices: string | undefined;
  signal: AbortSignal | undefined;
  /** Stops one of our sleeping engines (they hold some GPU memory); false when none is left. */
  releaseSleeping: () => Promise<boolean>;
}

export class VllmSupport {
  private readonly versions = new Map<string, Promise<VersionVerdict>>();
  private readonly sleepers = new Map<string, SleepRecord>();
  /** The GPUs each model was last checked against: the host-RAM estimate of level 1 uses them. */
  private readonly gpusOf = new Map<string, GpuReading[]>();
  private readonly log: Logger;

  constructor(private readonly opts: VllmSupportOptions) {
    this.log = opts.log;
  }

  /**
   * Before a cold start: refuse vLLM < 0.22.0 (ENGINE_START_FAILED), then wait for free GPU
   * memory (ENGINE_GPU_MEMORY after gpuMemoryWaitMs). An unreadable version or GPU state
   * only logs a warning: vLLM then gives its own error if something is wrong.
   */
  async beforeStart(model: ModelConfig, env: NodeJS.ProcessEnv, ctx: GpuWaitContext): Promise<void> {
    await this.checkVersion(model, env);
    await this.awaitGpuMemory(model, ctx, 'start');
  }

  /** `<command> --version`, once per command per manager. */
  async checkVersion(model: ModelConfig, env: NodeJS.ProcessEnv): Promise<void> {
    const command = model.command ?? 'vllm';
    let pending = this.versions.get(command);
    if (!pending) {
      pending = runVllmVersion(command, env, this.opts.versionTimeoutMs);
      this.versions.set(command, pending);
      const v = await pending;
      if (v.kind === 'ok') this.log.info({ command, vllmVersion: v.version }, 'vLLM version');
      else if (v.kind === 'unknown')
        this.log.warn({ command, reason: v.reason }, 'cannot read the vLLM version; starting it anyway');
    }
    const v = await pending;
    if (v.kind === 'refused') {
      throw new EngineError(
        'ENGINE_START_FAILED',
        `engine for model ${model.id} not started: ${v.message} (command: ${command})`,
        { model: model.id },
      );
    }
  }

  /**
   * Polls nvidia-smi until gpu_memory_utilization × total is free on each GPU the engine
   * uses. While short, our own sleeping engines are stopped first (LRU). 'start' fails with
   * ENGINE_GPU_MEMORY at the deadline; 'wake' is best effort (returns false, the wake is tried).
   */
  async awaitGpuMemory(
    model: ModelConfig,
    ctx: GpuWaitContext,
    mode: 'start' | 'wake',
    heldMiB?: ReadonlyMap<string, number>,
  ): Promise<boolean> {
    const utilization = model.options.gpu_memory_utilization ?? 0.9;
    const need: MemoryNeed = {
      cudaVisibleDevices: ctx.cudaVisibleDevices,
      utilization,
      gpuCount: parallelSize(model.options.extra_args),
      ...(heldMiB && { heldMiB }),
    };
    const t0 = Date.now();
    const deadline = t0 + this.opts.gpuMemoryWaitMs;
    let logged = false;
    for (;;) {
      const d = decideGpuMemory(await this.opts.queryGpus(this.opts.nvidiaSmi), need);
      if (d.kind === 'unknown') {
        this.log.warn({ model: model.id, reason: d.reason }, 'cannot check free GPU memory; letting vLLM try');
        return true;
      }
      this.gpusOf.set(model.id, d.gpus);
      if (d.kind === 'ok') {
        if (logged) this.log.info({ model: model.id, waitedMs: Date.now() - t0 }, 'GPU memory free');
        return true;
      }
      if (await ctx.releaseSleeping()) continue;
      if (Date.now() >= deadline) {
        const message = describeShortfall(
          model.id,
          utilization,
          d.short,
          await queryGpuProcesses(this.opts.nvidiaSmi),
          (pid) => this.ownerOf(pid),
        );
        if (mode === 'wake') {
          this.log.warn({ model: model.id, detail: message }, 'GPU memory still short; waking the engine anyway');
          return false;
        }
        const waited = Math.round((Date.now() - t0) / 1000);
        throw new EngineError(
          'ENGINE_GPU_MEMORY',
          `not enough free GPU memory to start model ${model.id} (waited ${waited} s for it to be released): ${message} — stop what holds it, lower options.gpu_memory_utilization of ${model.id}, or give this worker another GPU (WORKER_GPUS)`,
          { model: model.id },
        );
      }
      if (!logged) {
        logged = true;
        const short = d.short.map((s) => ({ gpu: s.gpu.index, freeMiB: s.gpu.memoryFreeMiB, neededMiB: s.neededMiB }));
        this.log.info(
          { model: model.id, short, waitMs: this.opts.gpuMemoryWaitMs },
          'waiting for GPU memory to be released',
        );
      }
      await delay(Math.min(this.opts.gpuMemoryPollMs, Math.max(0, deadline - Date.now())), ctx.signal);
    }
  }

  /**
   * The engine's real concurrency after it is ready: its log's "Maximum concurrency for N
   * tokens per request: X.XXx" line, else KV cache tokens (log or /metrics) over the context
   * length. Capped by max_num_seqs (256 when unset, as in vLLM); that when nothing is found.
   */
  async readConcurrency(
    model: ModelConfig,
    proc: { baseUrl: string; logFile: string; outputTail(): string[] },
    configured: number,
  ): Promise<{ concurrency: number; source: string }> {
    let text: string;
    try {
      text = linesOfLastStart(await readTail(proc.logFile, 4 * 1024 * 1024)).join('\n');
    } catch {
      text = proc.outputTail().join('\n');
    }
    const line = parseMaxConcurrency(text);
    if (line)
      return {
        concurrency: effectiveConcurrency(configured, line.maxConcurrency),
        source: `log: ${line.maxConcurrency}x for ${line.tokensPerRequest} tokens`,
      };
    let kvTokens = parseKvCacheTokens(text);
    let source = 'log: KV cache size';
    if (kvTokens === null) {
      kvTokens = await call(proc.baseUrl, 'GET', '/metrics', 2_000).then(
        (r) => (r.status === 200 ? parseCacheConfigInfo(r.body) : null),
        () => null,
      );
      source = '/metrics cache_config_info';
    }
    const maxLen = model.options.max_model_len ?? (await this.servedMaxModelLen(proc.baseUrl, model.id));
    if (kvTokens !== null && maxLen)
      return {
        concurrency: effectiveConcurrency(configured, kvTokens / maxLen),
        source: `${source}: ${kvTokens} tokens / ${maxLen}`,
      };
    return { concurrency: configured, source: 'max_num_seqs (no KV cache size found)' };
  }

  private async servedMaxModelLen(baseUrl: string, id: string): Promise<number | null> {
    try {
      const r = await call(baseUrl, 'GET', '/v1/models', 2_000);
      const data = (JSON.parse(r.body) as { data?: { id?: string; max_model_len?: unknown }[] }).data ?? [];
      const len = (data.find((m) => m.id === id) ?? data[0])?.max_model_len;
      return typeof len === 'number' && len > 0 ? len : null;
    } catch {
      return null;
    }
  }

  /** Level-1 host RAM held by these sleeping models (MiB). */
  hostRamInUse(sleepingModels: readonly string[]): number {
    return sleepingModels.reduce((sum, id) => sum + (this.sleepers.get(id)?.hostRamMiB ?? 0), 0);
  }

  /** Host RAM a model's weights take at level 1: options.host_ram_mb, else utilization × its GPUs' total. */
  hostRamNeed(model: ModelConfig): number | null {
    if (model.options.host_ram_mb !== undefined) return model.options.host_ram_mb;
    const gpus = this.gpusOf.get(model.id);
    if (!gpus?.length) return null;
    return Math.ceil(gpus.reduce((s, g) => s + g.memoryTotalMiB, 0) * (model.options.gpu_memory_utilization ?? 0.9));
  }

  /**
   * POST /sleep?level=N on an idle engine, then confirms with GET /is_sleeping. Records what
   * the wake needs (level, concurrency, GPU memory the sleeper keeps). Throws when it fails:
   * the manager then stops the engine as before.
   */
  async sleep(
    model: ModelConfig,
    baseUrl: string,
    concurrency: number,
    sleepingModels: readonly string[],
    cudaVisibleDevices: string | undefined,
  ): Promise<1 | 2> {
    const mode = sleepModeOf(model);
    if (mode === 'off') throw new Error(`sleep mode is off for model ${model.id}`);
    const need = this.hostRamNeed(model);
    const inUse = this.hostRamInUse(sleepingModels.filter((id) => id !== model.id));
    const level = chooseSleepLevel(mode, need, this.opts.hostRamBudgetMiB, inUse);
    if (mode === 'level1' && level === 2) {
      this.log.info(
        { model: model.id, hostRamNeedMiB: need, hostRamInUseMiB: inUse, budgetMiB: this.opts.hostRamBudgetMiB },
        'host RAM budget exhausted (or need unknown): sleeping at level 2',
      );
    }
    const before = await this.readGpus(cudaVisibleDevices);
    const t0 = performance.now();
    const timeoutMs = this.opts.sleepTimeoutMs ?? 120_000;
    const r = await call(baseUrl, 'POST', `/sleep?level=${level}`, timeoutMs);
    if (r.status < 200 || r.status >= 300) throw httpError('POST /sleep', r);
    if ((await isSleeping(baseUrl, 5_000)) === false)
      throw new Error('POST /sleep succeeded but GET /is_sleeping says it is awake');
    const after = await this.readGpus(cudaVisibleDevices);
    // What the sleeper still holds = what it was allowed to take − what the sleep gave back.
    const heldMiB = new Map<string, number>();
    const utilization = model.options.gpu_memory_utilization ?? 0.9;
    for (const g of after) {
      const b = before.find((x) => x.uuid === g.uuid);
      if (b)
        heldMiB.set(
          g.uuid,
          Math.max(0, Math.ceil(g.memoryTotalMiB * utilization) - Math.max(0, g.memoryFreeMiB - b.memoryFreeMiB)),
        );
    }
    this.sleepers.set(model.id, { level, hostRamMiB: level === 1 ? (need ?? 0) : 0, concurrency, heldMiB });
    this.log.info(
      { model: model.id, level, sleepMs: Math.round(performance.now() - t0), hostRamMiB: level === 1 ? need : 0 },
      'engine asleep',
    );
    return level;
  }

  /**
   * Waits (best effort) for GPU memory, then POST /wake_up, confirms it is awake and healthy.
   * Returns the wake time and the concurrency measured at its start. Throws when it fails:
   * the manager then stops the engine and cold-starts it.
   */
  async wake(
    model: ModelConfig,
    baseUrl: string,
    ctx: GpuWaitContext,
  ): Promise<{ ms: number; level: 1 | 2; concurrency: number }> {
    const rec = this.sleepers.get(model.id);
    if (!rec) throw new Error(`no sleep record for model ${model.id}`);
    await this.awaitGpuMemory(model, ctx, 'wake', rec.heldMiB);
    const t0 = performance.now();
    const timeoutMs = this.opts.sleepTimeoutMs ?? 120_000;
    const r = await call(baseUrl, 'POST', '/wake_up', timeoutMs, ctx.signal);
    if (r.status < 200 || r.status >= 300) throw httpError('POST /wake_up', r);
    if ((await isSleeping(baseUrl, 5_000, ctx.signal)) === true)
      throw new Error('POST /wake_up succeeded but GET /is_sleeping says it still sleeps');
    const health = await call(baseUrl, 'GET', '/health', 5_000, ctx.signal);
    if (health.status !== 200) throw httpError('GET /health after wake-up', health);
    this.sleepers.delete(model.id);
    return { ms: Math.round(performance.now() - t0), level: rec.level, concurrency: rec.concurrency };
  }

  private async readGpus(cudaVisibleDevices: string | undefined): Promise<GpuReading[]> {
    const q = await this.opts.queryGpus(this.opts.nvidiaSmi);
    return q.ok ? visibleGpus(q.gpus, cudaVisibleDevices) : [];
  }

  /** "our engine for model X (sleeping)" when pid belongs to one of our engines' process groups. */
  private ownerOf(pid: number): string | null {
    const group = processGroupOf(pid);
    const e = this.opts.engines().find((x) => x.pid !== null && (x.pid === pid || x.pid === group));
    return e ? `our engine for model ${e.model}, ${e.state}` : null;
  }
}
