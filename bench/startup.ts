/**
 * Start time and memory: the TypeScript source through tsx (how production ran before the build
 * step) against the compiled build (dist/, plain node), for three processes:
 *
 *   api     `main serve` until GET /readyz answers 200
 *   worker  `main worker` until it logs "worker started" (one sim model, no engine yet)
 *   sim     the simulator (an engine child) until GET /health answers 200 (--startup-ms 0)
 *
 * Time is from spawn() to ready, so Node's own start counts; RSS is VmRSS (/proc/<pid>/status,
 * Linux) read as soon as the process is ready. The two variants alternate run by run, so both
 * see the same machine load. A private redis-server serves the API and worker; each run has
 * its own DATA_DIR and QUEUE_PREFIX. dist/ is built first when stale (scripts/ensure-built.sh).
 *
 * --extra NAME=MAIN.js,SIMULATOR.js adds a third variant, e.g. another build's output (the design
 * choice in docs/performance.md compared tsc's per-file output this way).
 *
 * Usage: node --import tsx bench/startup.ts [--runs 7] [--quick] [--only api|worker|sim] [--extra …] [--out FILE]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultResultsPath, describeMachine, machineInfo, parseFlags, printTable, writeJson } from './lib/report.js';
import { freePort, machineCpuMs, REPO_ROOT, startRedis } from './lib/stack.js';
import { median } from './lib/stats.js';

const flags = parseFlags(process.argv.slice(2), { valued: ['runs', 'only', 'out', 'extra'], boolean: ['quick'] });
const RUNS = Number(flags['runs'] ?? (flags['quick'] ? 3 : 7));
const KINDS = (['api', 'worker', 'sim'] as const).filter((k) => !flags['only'] || flags['only'] === k);
type Kind = (typeof KINDS)[number];

const VARIANTS: Record<string, { main: string[]; sim: string[] }> = {
  tsx: { main: ['--import', 'tsx', 'src/main.ts'], sim: ['--import', 'tsx', 'simulator/main.ts'] },
  compiled: { main: ['dist/main.js'], sim: ['dist/simulator.js'] },
};
if (typeof flags['extra'] === 'string') {
  const m = /^([\w-]+)=([^,]+),(.+)$/.exec(flags['extra']);
  if (!m) throw new Error('--extra NAME=MAIN.js,SIMULATOR.js');
  VARIANTS[m[1]!] = { main: [m[2]!], sim: [m[3]!] };
}
type Variant = string;

function rssMb(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

async function httpStatus(url: string): Promise<number> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

/** One start: spawn, wait until ready, read RSS, stop. */
async function once(
  variant: Variant,
  kind: Kind,
  redisUrl: string,
  dir: string,
): Promise<{ ms: number; rssMb: number }> {
  const port = await freePort();
  const runDir = mkdtempSync(path.join(dir, `${variant}-${kind}-`));
  const models = path.join(runDir, 'models.yaml');
  writeFileSync(models, 'models:\n  - id: bench-start\n    engine: sim\n');
  const v = VARIANTS[variant]!;
  const args =
    kind === 'sim'
      ? [...v.sim, '--port', String(port), '--model', 'bench-start', '--startup-ms', '0']
      : [...v.main, kind === 'api' ? 'serve' : 'worker'];
  const env = {
    ...process.env,
    PORT: String(port),
    DATA_DIR: path.join(runDir, 'data'),
    MODELS_FILE: models,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: `bstart${port}`,
    LOG_LEVEL: 'info',
  };
  const t0 = performance.now();
  const proc = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const ready = async () =>
    kind === 'worker'
      ? out.includes('"msg":"worker started"')
      : (await httpStatus(`http://127.0.0.1:${port}/${kind === 'api' ? 'readyz' : 'health'}`)) === 200;
  try {
    const deadline = Date.now() + 60_000;
    while (!(await ready())) {
      if (proc.exitCode !== null) throw new Error(`${variant} ${kind} exited ${proc.exitCode}:\n${out.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`${variant} ${kind} not ready in 60 s:\n${out.slice(-2000)}`);
      await sleep(kind === 'worker' ? 2 : 5);
    }
    return { ms: performance.now() - t0, rssMb: rssMb(proc.pid!) };
  } finally {
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** CPU ms this process and its exited (reaped) children used: /proc/self/stat utime+stime+cutime+cstime. */
function selfAndChildrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / 100;
}

const fmt = (xs: number[], digits: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return `${median(s).toFixed(digits)} (${s[0]!.toFixed(digits)}–${s.at(-1)!.toFixed(digits)})`;
};

async function main(): Promise<void> {
  execFileSync('bash', [path.join(REPO_ROOT, 'scripts/ensure-built.sh')], { stdio: 'inherit' });
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-startup-'));
  const redis = await startRedis({ dir });
  const samples: Record<string, { ms: number[]; rssMb: number[] }> = {};
  const load: number[] = [];
  try {
    const t0 = performance.now();
    const [m0, own0] = [machineCpuMs(), selfAndChildrenCpuMs()];
    for (const kind of KINDS) {
      // One unmeasured start each first: the file cache is then warm for both.
      for (const variant of Object.keys(VARIANTS)) await once(variant, kind, redis.url, dir);
      for (let i = 0; i < RUNS; i++) {
        // Alternate which goes first, so neither always runs right after the other.
        const order = Object.keys(VARIANTS);
        if (i % 2) order.reverse();
        for (const variant of order) {
          const r = await once(variant, kind, redis.url, dir);
          const s = (samples[`${kind} ${variant}`] ??= { ms: [], rssMb: [] });
          s.ms.push(r.ms);
          s.rssMb.push(r.rssMb);
          load.push(os.loadavg()[0]!);
        }
      }
    }
    const span = (performance.now() - t0) * os.cpus().length;
    const [m1, own1] = [machineCpuMs(), selfAndChildrenCpuMs()];
    // What else ran meanwhile: the machine's busy CPU minus this benchmark's (and the processes it measured).
    const otherCpuPct = (100 * Math.max(0, m1.busy - m0.busy - (own1 - own0))) / span;
    const stealPct = (100 * (m1.steal - m0.steal)) / span;
    const rows = Object.entries(samples).map(([k, s]) => [k, s.ms.length, fmt(s.ms, 0), fmt(s.rssMb, 0)]);
    console.log(`\n${describeMachine()}; ${RUNS} runs each, interleaved`);
    console.log(
      `load average (1 min) during the runs: ${fmt(load, 1)}; other processes' CPU ${otherCpuPct.toFixed(0)} % of the machine, steal ${stealPct.toFixed(0)} %\n`,
    );
    printTable(['process variant', 'n', 'ms to ready: median (min–max)', 'RSS MB: median (min–max)'], rows);
    const file = writeJson((flags['out'] as string | undefined) ?? defaultResultsPath('startup'), {
      machine: machineInfo(),
      runs: RUNS,
      loadAverage1m: load,
      otherCpuPct,
      stealPct,
      samples,
    });
    console.log(`\nresults: ${file}`);
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
