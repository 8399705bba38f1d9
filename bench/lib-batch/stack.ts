/**
 * The real thing, as child processes: a private redis-server, the API (`src/main.ts serve`)
 * and a worker (`src/main.ts worker`), each with its own env, in a temp DATA_DIR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { freePort, startRedis, type TestRedis } from '../../test/helpers/redis-server.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface SimModel {
  id: string;
  /** max_num_seqs: the worker keeps this many in flight; also the sim's --max-concurrency. */
  slots: number;
  ttftMs?: number;
  startupMs?: number;
  outputTokens?: number;
}

export function modelsYaml(models: SimModel[]): string {
  const lines = ['models:'];
  for (const m of models) {
    lines.push(
      `  - id: ${m.id}`,
      '    engine: sim',
      '    startup_timeout_s: 60',
      '    options:',
      `      max_num_seqs: ${m.slots}`,
      `    sim: ${JSON.stringify({ max_concurrency: m.slots, ttft_ms: m.ttftMs ?? 0, startup_ms: m.startupMs ?? 0, output_tokens: m.outputTokens ?? 16 })}`,
    );
  }
  return lines.join('\n') + '\n';
}

/** The JSON log lines in a process's captured output (pino lines; anything else is skipped). */
export function jsonLinesOf(out: string): Record<string, unknown>[] {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

export interface Proc {
  name: string;
  proc: ChildProcess;
  pid: number;
  output(): string;
  /** Output lines that parse as JSON (pino). */
  jsonLines(): Record<string, unknown>[];
  stop(): Promise<void>;
}

export interface StackOptions {
  models: SimModel[];
  env?: Record<string, string>;
  /** pino level of the API / worker (default warn). */
  apiLogLevel?: string;
  workerLogLevel?: string;
  /** Write V8 CPU profiles of both processes to this folder. */
  cpuProfDir?: string;
  /** Start the worker (default true). */
  worker?: boolean;
}

export interface Stack {
  baseUrl: string;
  dataDir: string;
  redisUrl: string;
  prefix: string;
  client: OpenAI;
  redis: Redis;
  redisPid: number;
  api: Proc;
  worker: Proc | undefined;
  /** Base URL of the model's engine while a worker advertises it ready. */
  engineUrl(model: string): Promise<string | null>;
  waitEngineReady(model: string, timeoutMs?: number): Promise<string>;
  close(): Promise<void>;
}

function startProc(name: string, args: string[], env: Record<string, string>, nodeFlags: string[]): Proc {
  const proc = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', path.join(ROOT, 'src/main.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const cap = (d: Buffer) => {
    out += d.toString();
    if (out.length > 4_000_000) out = out.slice(-2_000_000);
  };
  proc.stdout.on('data', cap);
  proc.stderr.on('data', cap);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    name,
    proc,
    pid: proc.pid!,
    output: () => out,
    jsonLines: () => jsonLinesOf(out),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'bw-bench-'));
  const modelsFile = path.join(dataDir, 'models.yaml');
  writeFileSync(modelsFile, modelsYaml(opts.models));
  let redis: TestRedis | undefined;
  const procs: Proc[] = [];
  try {
    redis = await startRedis({ dir: mkdtempSync(path.join(tmpdir(), 'bw-bench-redis-')) });
    const port = await freePort();
    const prefix = 'bw';
    const env = {
      DATA_DIR: dataDir,
      MODELS_FILE: modelsFile,
      REDIS_URL: redis.url,
      QUEUE_PREFIX: prefix,
      HOST: '127.0.0.1',
      ...opts.env,
    };
    // One folder per process: Node writes a profile per thread (tsx's loader thread too).
    const flags = (name: string) =>
      opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', path.join(opts.cpuProfDir, name)] : [];
    const api = startProc(
      'api',
      ['serve'],
      { ...env, PORT: String(port), LOG_LEVEL: opts.apiLogLevel ?? 'warn' },
      flags('api'),
    );
    procs.push(api);
    const worker =
      opts.worker === false
        ? undefined
        : startProc('worker', ['worker'], { ...env, LOG_LEVEL: opts.workerLogLevel ?? 'warn' }, flags('worker'));
    if (worker) procs.push(worker);
    const baseUrl = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      for (const p of procs)
        if (p.proc.exitCode !== null)
          throw new Error(`${p.name} exited (${p.proc.exitCode}):\n${p.output().slice(-3000)}`);
      try {
        const r = await fetch(`${baseUrl}/readyz`);
        if (r.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`API not ready in 60 s:\n${api.output().slice(-3000)}`);
      await sleep(100);
    }
    const rc = new Redis(redis.url, { maxRetriesPerRequest: 3 });
    const heartbeats = async () => {
      const keys = await rc.keys(`${prefix}:worker:*`);
      const vals = keys.length ? await rc.mget(...keys) : [];
      return vals
        .filter((v): v is string => !!v)
        .map((v) => JSON.parse(v) as { engines: { model: string; state: string; baseUrl: string | null }[] });
    };
    if (worker) {
      while ((await heartbeats()).length === 0) {
        if (worker.proc.exitCode !== null) throw new Error(`worker exited:\n${worker.output().slice(-3000)}`);
        if (Date.now() > deadline) throw new Error('worker sent no heartbeat in 60 s');
        await sleep(100);
      }
    }
    const engineUrl = async (model: string) => {
      for (const hb of await heartbeats())
        for (const e of hb.engines) if (e.model === model && e.state === 'ready' && e.baseUrl) return e.baseUrl;
      return null;
    };
    const r = redis;
    return {
      baseUrl,
      dataDir,
      redisUrl: redis.url,
      prefix,
      client: new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'bench', maxRetries: 0, timeout: 600_000 }),
      redis: rc,
      redisPid: redis.proc.pid!,
      api,
      worker,
      engineUrl,
      async waitEngineReady(model, timeoutMs = 60_000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const u = await engineUrl(model);
          if (u) return u;
          if (Date.now() > until) throw new Error(`engine of ${model} not ready in ${timeoutMs} ms`);
          await sleep(20);
        }
      },
      async close() {
        rc.disconnect();
        for (const p of [...procs].reverse()) await p.stop();
        await r.stop();
        rmSync(r.dir, { recursive: true, force: true });
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const p of procs.reverse()) await p.stop().catch(() => undefined);
    if (redis) {
      await redis.stop().catch(() => undefined);
      rmSync(redis.dir, { recursive: true, force: true });
    }
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Uploads a file as multipart/form-data with undici, streaming it from disk in 1 MiB reads
 * (the file is never whole in this process's memory; fetch + FormData was about 2× slower).
 */
export async function uploadFile(
  baseUrl: string,
  file: string,
  purpose = 'batch',
): Promise<{ id: string; bytes: number }> {
  const boundary = `----bwbench${Math.random().toString(16).slice(2)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${purpose}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path.basename(file)}"\r\nContent-Type: application/jsonl\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const size = statSync(file).size;
  async function* body() {
    yield head;
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) yield chunk as Buffer;
    yield tail;
  }
  const res = await request(`${baseUrl}/v1/files`, {
    method: 'POST',
    headers: {
      authorization: 'Bearer bench',
      'content-type': `multipart/form-data; boundary=${boundary}`,
      'content-length': String(head.length + size + tail.length),
    },
    body: Readable.from(body()),
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  const json = (await res.body.json()) as { id: string; bytes: number };
  if (res.statusCode !== 200) throw new Error(`upload failed: ${res.statusCode} ${JSON.stringify(json)}`);
  return json;
}

export interface BatchView {
  id: string;
  status: string;
  request_counts?: { total: number; completed: number; failed: number } | null;
  output_file_id?: string | null;
  error_file_id?: string | null;
  in_progress_at?: number | null;
  completed_at?: number | null;
}

export async function getBatch(baseUrl: string, id: string): Promise<BatchView> {
  const res = await fetch(`${baseUrl}/v1/batches/${id}`, { headers: { authorization: 'Bearer bench' } });
  return (await res.json()) as BatchView;
}

export async function createBatch(
  baseUrl: string,
  inputFileId: string,
  endpoint = '/v1/chat/completions',
): Promise<BatchView> {
  const res = await fetch(`${baseUrl}/v1/batches`, {
    method: 'POST',
    headers: { authorization: 'Bearer bench', 'content-type': 'application/json' },
    body: JSON.stringify({ input_file_id: inputFileId, endpoint, completion_window: '24h' }),
  });
  const body = (await res.json()) as BatchView;
  if (!res.ok) throw new Error(`batch create failed: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** Polls until the batch is in one of `statuses`; returns it and the time (ms, performance.now) it was first seen there. */
export async function waitStatus(
  baseUrl: string,
  id: string,
  statuses: string[],
  opts: { timeoutMs?: number; pollMs?: number; onPoll?: (b: BatchView, at: number) => void } = {},
): Promise<{ batch: BatchView; at: number }> {
  const until = Date.now() + (opts.timeoutMs ?? 600_000);
  for (;;) {
    const b = await getBatch(baseUrl, id);
    opts.onPoll?.(b, performance.now());
    if (statuses.includes(b.status)) return { batch: b, at: performance.now() };
    if (['failed', 'expired', 'cancelled'].includes(b.status) && !statuses.includes(b.status))
      throw new Error(`batch ${id} ended ${b.status}: ${JSON.stringify(b)}`);
    if (Date.now() > until) throw new Error(`batch ${id} still ${b.status} (${JSON.stringify(b.request_counts)})`);
    await sleep(opts.pollMs ?? 20);
  }
}

export interface SimStats {
  served: number;
  running: number;
  waiting: number;
  peakRunning: number;
  busySlotMs: number;
  arrived: number;
  readyAtMs: number | null;
}

export async function simStats(engineUrl: string): Promise<SimStats> {
  return (await (await fetch(`${engineUrl}/sim/stats`)).json()) as SimStats;
}

export async function simReset(engineUrl: string): Promise<SimStats> {
  return (await (await fetch(`${engineUrl}/sim/reset`, { method: 'POST' })).json()) as SimStats;
}

/** Resident set size (bytes) of a process, from /proc/<pid>/status VmRSS. */
export function rssOf(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat. */
export function cpuMsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // fields 14 and 15, in clock ticks (USER_HZ 100)
  } catch {
    return null;
  }
}

/** Pids whose parent is `pid` (the worker's engines). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === pid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
