import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parseModelsYaml } from '../../src/config/load.js';
import { launcherOf } from '../../src/config/models.js';
import { BatchJobEngine } from '../../src/engines/launchers/batch-job.js';
import {
  explainQsubError,
  parsePbsnodesGpus,
  parsePbsTime,
  parseQstatAttributes,
  parseQstatJob,
  parseQstatQueuePosition,
  PbsScheduler,
} from '../../src/engines/launchers/pbs.js';
import type { CommandResult, CommandRunner } from '../../src/engines/launchers/runner.js';
import { JobRejectedError } from '../../src/engines/launchers/scheduler.js';
import { createLogger } from '../../src/log/logger.js';

const FIX = fileURLToPath(new URL('../fixtures/pbs/', import.meta.url));
const fx = (name: string) => readFileSync(path.join(FIX, name), 'utf8');
const out = (stdout: string, rc = 0): CommandResult => ({
  rc,
  stdout,
  stderr: '',
  timedOut: false,
  missing: false,
  ms: 1,
});
const err = (stderr: string, rc: number): CommandResult => ({
  rc,
  stdout: '',
  stderr,
  timedOut: false,
  missing: false,
  ms: 1,
});

describe('PBS outputs (recorded)', () => {
  it('qstat -f: attributes, continuation lines joined', () => {
    const a = parseQstatAttributes(fx('qstat-f-queued.txt'));
    expect(a['Job Id']).toBe('1234.pbs01');
    expect(a['Resource_List.select']).toBe('1:ncpus=8:ngpus=2:mem=64gb');
    expect(a['Variable_List']).toBe(
      'PBS_O_HOME=/home/me,PBS_O_LANG=C.UTF-8,PBS_O_LOGNAME=me,PBS_O_PATH=/usr/local/bin:/usr/bin:/bin,PBS_O_SHELL=/bin/bash,PBS_O_WORKDIR=/home/me,PBS_O_SYSTEM=Linux,PBS_O_QUEUE=gpuq,PBS_O_HOST=login01',
    );
  });

  it('job states map onto pending / running / ended, with node, time left and never-run', () => {
    expect(parseQstatJob(fx('qstat-f-queued.txt'))).toEqual({
      phase: 'pending',
      state: 'Q',
      reason: 'Not Running: Insufficient amount of resource: ngpus',
      node: null,
      timeLeftS: null,
      neverStarts: null,
    });
    expect(parseQstatJob(fx('qstat-f-running.txt'))).toMatchObject({
      phase: 'running',
      state: 'R',
      node: 'gpu03',
      timeLeftS: 70 * 60,
    });
    expect(parseQstatJob(fx('qstat-f-never.txt'))?.neverStarts).toBe(
      'PBS job can never start (Can Never Run: Insufficient amount of resource: ngpus (R: 16 A: 4 T: 32)): lower launcher.cpus/gpus/mem/nodes or pick another queue',
    );
    expect(parseQstatJob('Job Id: 1.x\n    job_state = E\n')?.phase).toBe('ending');
    expect(parseQstatJob('Job Id: 1.x\n    job_state = F\n')?.phase).toBe('ended');
    expect(parseQstatJob('Job Id: 1.x\n    job_state = H\n')?.phase).toBe('pending');
  });

  it('queue position among queued (Q) jobs of the queue, held ones not counted', () => {
    expect(parseQstatQueuePosition(fx('qstat-queue.txt'), '1234.pbs01')).toEqual({ position: 2, pending: 3 });
    expect(parseQstatQueuePosition(fx('qstat-queue.txt'), '1234')).toEqual({ position: 2, pending: 3 });
    expect(parseQstatQueuePosition(fx('qstat-queue.txt'), '1230.pbs01')).toBeNull(); // running
  });

  it('GPUs free from pbsnodes -a: offline nodes count in the total only, CPU nodes not at all', () => {
    expect(parsePbsnodesGpus(fx('pbsnodes-a.txt'))).toEqual({ free: 3, total: 12 });
  });

  it('estimated.start_time in ctime format', () => {
    expect(parsePbsTime('Tue Dec  1 11:45:00 2026')).toBe(new Date(2026, 11, 1, 11, 45, 0).getTime());
  });

  it('qsub refusals in one line', () => {
    expect(explainQsubError(fx('qsub-unknown-queue.txt'))).toBe(
      'PBS rejected the job: unknown queue — set launcher.partition to a queue that `qstat -Q` lists (qsub: Unknown queue)',
    );
    expect(explainQsubError(fx('qsub-exceeds-limits.txt'))).toMatch(
      /^PBS rejected the job: it asks for more than the queue allows \(CPUs, GPUs, memory or walltime\) — lower launcher/,
    );
  });
});

/** A PBS server replayed from the fixtures; `phase()` picks which qstat -f file answers. */
function fakePbs(phase: () => 'queued' | 'running' | 'never' | 'gone', onSubmit?: () => void) {
  const calls: string[] = [];
  let deleted = false;
  const run: CommandRunner = async (cmd, args) => {
    calls.push(`${cmd} ${args.join(' ')}`);
    if (cmd === 'qsub') {
      onSubmit?.();
      return out(fx('qsub-ok.txt'));
    }
    if (cmd === 'qdel') {
      deleted = true;
      return out('');
    }
    if (cmd === 'pbsnodes') return out(fx('pbsnodes-a.txt'));
    if (cmd === 'qstat' && args[0] !== '-f') return out(fx('qstat-queue.txt'));
    const p = deleted ? 'gone' : phase();
    if (p === 'gone') return err(fx('qstat-unknown.txt'), 153);
    return out(fx(`qstat-f-${p}.txt`));
  };
  return { run, calls };
}

const engines: BatchJobEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
});

function pbsEngine(dir: string, run: CommandRunner) {
  const [m] = parseModelsYaml(
    `models:\n  - id: llama-8b\n    engine: sim\n    launcher: { kind: pbs, partition: gpuq, gpus: 2, cpus: 8, mem: 64G, time: "90", poll_s: 0.05, monitor_url: "https://hpc.example.org/jobs/{job_id}" }\n`,
    'models.yaml',
  );
  const e = new BatchJobEngine({
    model: m!,
    launcher: launcherOf(m!)!,
    scheduler: new PbsScheduler(run, 30_000),
    logFile: path.join(dir, 'engine.log'),
    log: createLogger('silent'),
    stateDir: dir,
    startupTimeoutMs: 10_000,
    healthIntervalMs: 50,
  });
  engines.push(e);
  return e;
}

async function until(f: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(20);
  }
}

describe('the pbs launcher: same code path as slurm', () => {
  it('queued: position, PBS estimate, free GPUs, monitoring URL; then running: reaches the engine on the node', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-pbs-'));
    const srv = http.createServer((_q, r) => r.end('ok')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as AddressInfo).port;
    let phase: 'queued' | 'running' = 'queued';
    const { run, calls } = fakePbs(
      () => phase,
      () => writeFileSync(path.join(dir, 'llama-8b', 'endpoint.1234.pbs01'), `127.0.0.1 ${port}\n`),
    );
    const e = pbsEngine(dir, run);
    try {
      const ready = e.start();
      await until(() => e.detail().queuePosition !== null);
      const d = e.detail();
      expect(d.text).toMatch(
        /^PBS job 1234\.pbs01 Q \(Not Running: Insufficient amount of resource: ngpus\) for \d+ s: position 2 of 3 pending, estimated start 2026-12-01T\d\d:45:00Z \(PBS's estimate\), 3 of 12 GPUs free in partition gpuq — https:\/\/hpc.example.org\/jobs\/1234.pbs01$/,
      );
      expect(d).toMatchObject({
        launcher: 'pbs',
        jobId: '1234.pbs01',
        estimateSource: 'scheduler',
        gpusFree: 3,
        gpusTotal: 12,
      });
      phase = 'running';
      await ready;
      expect(e.baseUrl).toBe(`http://127.0.0.1:${port}`);
      expect(e.detail().text).toMatch(/^PBS job 1234\.pbs01 R on gpu03, engine at 127\.0\.0\.1:\d+, 70 min left/);
      const script = readFileSync(path.join(dir, 'llama-8b', 'job.sh'), 'utf8');
      expect(script).toContain('#PBS -l select=1:ncpus=8:ngpus=2:mem=64gb');
      expect(calls[0]).toBe(`qsub ${path.join(dir, 'llama-8b', 'job.sh')}`);
      await e.stop();
      expect(calls).toContain('qdel 1234.pbs01');
      expect(readFileSync(path.join(dir, 'engine.log'), 'utf8')).toMatch(
        /PBS job 1234\.pbs01: Q \(Not Running: .*\) → R .*after \d+ s/,
      );
    } finally {
      srv.close();
    }
  });

  it('a job that can never run is explained and deleted', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-pbs-'));
    const { run, calls } = fakePbs(() => 'never');
    const e = pbsEngine(dir, run);
    const failure = (await e.start().catch((x: unknown) => x)) as Error;
    expect(failure.message).toMatch(
      /^engine for model llama-8b not started: PBS job can never start \(Can Never Run: Insufficient amount of resource: ngpus \(R: 16 A: 4 T: 32\)\): lower launcher.* — job 1234\.pbs01 cancelled$/,
    );
    expect(calls).toContain('qdel 1234.pbs01');
  });

  it('a job that ends before its engine answers: the failure quotes its output', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-pbs-'));
    const { run } = fakePbs(
      () => 'gone',
      () => undefined,
    );
    const e = pbsEngine(dir, run);
    const failure = (await e.start().catch((x: unknown) => x)) as Error & { code: string };
    expect(failure.code).toBe('ENGINE_START_FAILED');
    expect(failure.message).toMatch(/^PBS job 1234\.pbs01 for model llama-8b ended before its engine was ready/);
  });

  it('a rejected qsub is one line', async () => {
    const s = new PbsScheduler(async () => err(fx('qsub-unknown-queue.txt'), 168), 30_000);
    const e = (await s.submit('/x/job.sh').catch((x: unknown) => x)) as Error;
    expect(e).toBeInstanceOf(JobRejectedError);
    expect(e.message).toBe(
      'PBS rejected the job: unknown queue — set launcher.partition to a queue that `qstat -Q` lists (qsub: Unknown queue)',
    );
    expect(await new PbsScheduler(async () => err(fx('qstat-finished.txt'), 35), 1).status('1234.pbs01')).toBeNull();
  });
});
