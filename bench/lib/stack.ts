/**
 * Starting what a benchmark measures, as real processes: a private redis-server, the
 * batchwright API (`src/main.ts serve`) and workers (`src/main.ts worker`), or a bare
 * simulator. Every process writes its output to a log file (as under a process manager),
 * never to a pipe the benchmark has to drain.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

/** The repository root (bench/lib/ is two levels down). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Thrown from a waitUntil check to stop waiting at once (e.g. the process died). */
export class GiveUp extends Error {
  override name = 'GiveUp';
}

/**
 * Polls `check` every `everyMs` until it returns true; throws after `timeoutMs`. Errors from
 * `check` count as "not yet", except GiveUp, which is rethrown.
 */
export async function waitUntil(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** True once GET url answers 2xx. */
export async function httpOk(url: string): Promise<boolean> {
  const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await r.arrayBuffer();
  return r.ok;
}

export interface Child {
  name: string;
  proc: ChildProcess;
  /** Where its stdout and stderr go. */
  logFile: string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
  /** The last lines of its log, for error messages. */
  tail(lines?: number): string;
}

const live = new Set<Child>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A benchmark that throws or is interrupted must not leave servers behind.
  process.once('exit', () => {
    for (const c of live) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGTERM');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const c of live) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGTERM');
      process.exit(130);
    });
  }
}

/** Spawns a process with stdout+stderr appended to `logFile`. */
export function spawnLogged(
  name: string,
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; logFile: string },
): Child {
  installExitHook();
  const fd = openSync(opts.logFile, 'a');
  const proc = spawn(command, args, {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const child: Child = {
    name,
    proc,
    logFile: opts.logFile,
    async stop(graceMs = 10_000) {
      live.delete(child);
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    },
    tail(lines = 20) {
      try {
        return readFileSync(opts.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
  };
  live.add(child);
  return child;
}

/** `node --import tsx <script> ...args`, with extra node flags first (e.g. --cpu-prof). */
export function spawnTsNode(
  name: string,
  script: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; logFile: string; nodeArgs?: string[] },
): Child {
  return spawnLogged(name, process.execPath, [...(opts.nodeArgs ?? []), '--import', 'tsx', script, ...args], opts);
}

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** A private redis-server on a free port, persistence off (a benchmark needs none). */
export async function startRedis(opts: { dir: string }): Promise<RedisServer> {
  const port = await freePort();
  const child = spawnLogged(
    'redis',
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      opts.dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--loglevel',
      'warning',
    ],
    {
      logFile: path.join(opts.dir, 'redis.log'),
    },
  );
  const url = `redis://127.0.0.1:${port}`;
  await waitUntil(
    async () => {
      if (child.proc.exitCode !== null) throw new GiveUp(`redis-server exited: ${child.tail()}`);
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => undefined);
      try {
        await r.connect();
        await r.ping();
        return true;
      } finally {
        r.disconnect();
      }
    },
    10_000,
    `redis-server on port ${port}`,
  );
  return { url, port, stop: () => child.stop() };
}

/** A model of the registry served by the simulator (keys as in models.yaml `sim:`). */
export interface SimModel {
  id: string;
  maxNumSeqs?: number;
  sim?: Record<string, number | boolean>;
}

export function simModelsYaml(models: SimModel[]): string {
  const lines = ['models:'];
  for (const m of models) {
    lines.push(`  - id: ${JSON.stringify(m.id)}`, '    engine: sim', '    startup_timeout_s: 30');
    if (m.maxNumSeqs) lines.push('    options:', `      max_num_seqs: ${m.maxNumSeqs}`);
    if (m.sim && Object.keys(m.sim).length) lines.push(`    sim: ${JSON.stringify(m.sim)}`);
  }
  return `${lines.join('\n')}\n`;
}

export interface StackOptions {
  models: SimModel[];
  /** One entry per worker process: the models it serves (WORKER_MODELS). */
  workers: string[][];
  /** LOG_LEVEL of the API process (default info, as a user runs it). Workers log at warn. */
  apiLogLevel?: string;
  /** Extra node flags of the API process (e.g. --cpu-prof --cpu-prof-dir=...). */
  apiNodeArgs?: string[];
  /** Extra environment for every batchwright process. */
  env?: Record<string, string>;
  /** Keep the temp folder (logs, profiles) after close. */
  keepDir?: boolean;
}

export interface Stack {
  apiUrl: string;
  redisUrl: string;
  prefix: string;
  /** Temp folder: models.yaml, data dirs, logs. */
  dir: string;
  api: Child;
  workers: Child[];
  /** The base URL of a ready engine of `model` that a worker advertises in Redis. */
  engineUrl(model: string, timeoutMs?: number): Promise<string>;
  close(): Promise<void>;
}

/** Redis + the API (`src/main.ts serve`) + workers (`src/main.ts worker`) as child processes. */
export async function startStack(opts: StackOptions): Promise<Stack> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-'));
  const redis = await startRedis({ dir });
  const prefix = 'bench';
  const modelsFile = path.join(dir, 'models.yaml');
  writeFileSync(modelsFile, simModelsYaml(opts.models));
  const main = path.join(REPO_ROOT, 'src', 'main.ts');
  const baseEnv = (dataDir: string, extra: Record<string, string>): NodeJS.ProcessEnv => ({
    ...process.env,
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    MODELS_FILE: modelsFile,
    REDIS_URL: redis.url,
    QUEUE_PREFIX: prefix,
    // The benchmark measures the proxy at thousands of requests per second from one client:
    // the per-client request limit (6000 a minute by default) would turn P1-P4 into 429s.
    RATE_LIMIT_PER_MIN: '0',
    ...opts.env,
    ...extra,
  });
  const children: Child[] = [];
  const stopAll = async () => {
    for (const c of children.reverse()) await c.stop().catch(() => undefined);
    await redis.stop().catch(() => undefined);
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const workers = opts.workers.map((models, i) => {
      const w = spawnTsNode(`worker${i + 1}`, main, ['worker'], {
        env: baseEnv(path.join(dir, `worker${i + 1}`), {
          WORKER_MODELS: models.join(','),
          WORKER_ID: `bench-w${i + 1}`,
          LOG_LEVEL: 'warn',
          PORT: '0',
        }),
        logFile: path.join(dir, `worker${i + 1}.log`),
      });
      children.push(w);
      return w;
    });
    const port = await freePort();
    const api = spawnTsNode('api', main, ['serve'], {
      env: baseEnv(path.join(dir, 'api'), { PORT: String(port), LOG_LEVEL: opts.apiLogLevel ?? 'info' }),
      logFile: path.join(dir, 'api.log'),
      nodeArgs: opts.apiNodeArgs,
    });
    children.push(api);
    const apiUrl = `http://127.0.0.1:${port}`;
    await waitUntil(
      async () => {
        for (const c of children)
          if (c.proc.exitCode !== null) throw new GiveUp(`${c.name} exited with ${c.proc.exitCode}:\n${c.tail()}`);
        return httpOk(`${apiUrl}/healthz`);
      },
      60_000,
      'the API to listen',
      100,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n--- api log ---\n${api.tail()}`);
    });
    const engineUrl = async (model: string, timeoutMs = 60_000) => {
      const r = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      let found = '';
      try {
        await waitUntil(
          async () => {
            const keys = await r.keys(`${prefix}:worker:*`);
            const values = keys.length ? await r.mget(...keys) : [];
            for (const v of values) {
              if (!v) continue;
              const hb = JSON.parse(v) as { engines?: { model: string; state: string; baseUrl: string | null }[] };
              const e = hb.engines?.find((x) => x.model === model && x.state === 'ready' && x.baseUrl);
              if (e?.baseUrl) found = e.baseUrl;
            }
            return found !== '';
          },
          timeoutMs,
          `a ready engine of ${model} in Redis`,
          100,
        );
      } finally {
        r.disconnect();
      }
      return found;
    };
    return { apiUrl, redisUrl: redis.url, prefix, dir, api, workers, engineUrl, close: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

export interface SimProcess {
  url: string;
  child: Child;
  stop(): Promise<void>;
}

/** A bare simulator (`simulator/main.ts`) on a free port; `args` are its flags besides --port/--model. */
export async function startSimulator(
  model: string,
  args: string[] = [],
  opts: { logFile?: string } = {},
): Promise<SimProcess> {
  const port = await freePort();
  const logFile = opts.logFile ?? path.join(mkdtempSync(path.join(tmpdir(), 'bw-sim-')), 'sim.log');
  const child = spawnTsNode(
    'sim',
    path.join(REPO_ROOT, 'simulator', 'main.ts'),
    ['--port', String(port), '--model', model, ...args],
    { logFile },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(
    async () => {
      if (child.proc.exitCode !== null) throw new GiveUp(`simulator exited: ${child.tail()}`);
      return httpOk(`${url}/health`);
    },
    30_000,
    'the simulator',
  );
  return { url, child, stop: () => child.stop() };
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux); NaN elsewhere. */
export function cpuTimeMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15, in clock ticks (USER_HZ = 100 on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Machine-wide CPU time (ms, all cores) from /proc/stat (Linux); NaNs elsewhere. `steal`: time the hypervisor gave to others. */
export function machineCpuMs(): { busy: number; idle: number; steal: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    const tick = 1000 / 100;
    return { busy: (user + nice + system + irq + softirq) * tick, idle: (idle + iowait) * tick, steal: steal * tick };
  } catch {
    return { busy: Number.NaN, idle: Number.NaN, steal: Number.NaN };
  }
}

/** CPU time (ms) of `pid` and all its descendants now alive, from /proc (Linux); NaN elsewhere. */
export function treeCpuMs(pid: number): number {
  if (Number.isNaN(cpuTimeMs(pid))) return Number.NaN;
  let total = 0;
  const seen = new Set<number>();
  const visit = (p: number): void => {
    if (seen.has(p)) return;
    seen.add(p);
    const own = cpuTimeMs(p);
    if (Number.isNaN(own)) return;
    total += own;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      try {
        for (const c of readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim().split(/\s+/))
          if (c) visit(Number(c));
      } catch {
        // gone, or no CONFIG_PROC_CHILDREN
      }
    }
  };
  visit(pid);
  return total;
}

/**
 * Measures what else ran on the machine during `fn`: CPU the rest of the machine used besides
 * this process tree, and hypervisor steal, each as a share of all cores over the elapsed time.
 */
export async function withMachineLoad<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; otherCpuPct: number; stealPct: number }> {
  const cores = os.cpus().length;
  const t0 = performance.now();
  const m0 = machineCpuMs();
  const own0 = treeCpuMs(process.pid);
  const result = await fn();
  const m1 = machineCpuMs();
  const own1 = treeCpuMs(process.pid);
  const span = (performance.now() - t0) * cores;
  const other = Math.max(0, m1.busy - m0.busy - (own1 - own0));
  return { result, otherCpuPct: (100 * other) / span, stealPct: (100 * (m1.steal - m0.steal)) / span };
}
