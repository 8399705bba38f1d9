/**
 * Engines as SLURM jobs against a real single-node SLURM 22.05 cluster (2 CPUs, 2 fake GPUs),
 * brought up by scripts/slurm-cluster.sh when none answers. One file, run in order: the
 * cluster is small and the blocker test takes all of it.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseModelsYaml } from '../../src/config/load.js';
import { ModelManager } from '../../src/engines/model-manager.js';
import { execRunner } from '../../src/engines/launchers/runner.js';
import { SchedulerUnavailableError } from '../../src/engines/launchers/scheduler.js';
import { SlurmScheduler } from '../../src/engines/launchers/slurm.js';
import { createLogger } from '../../src/log/logger.js';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';
import {
  ensureSlurmCluster,
  jobsNamed,
  modelLog,
  recordedJob,
  sbatch,
  scancel,
  scancelNamed,
} from './slurm-support.js';

const cluster = ensureSlurmCluster();
if (!cluster.ok) console.warn(`slurm-cluster tests skipped: ${cluster.reason}`);

const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-slurm-in-'));

/** A sim model whose engine runs as a SLURM job (-c 1: the cluster has 2 CPUs). */
function modelsYaml(
  id: string,
  launcher: Record<string, unknown> = {},
  sim: Record<string, unknown> = {},
  idleTtlS = 0,
): string {
  const l = {
    kind: 'slurm',
    cpus: 1,
    time: '10',
    poll_s: 0.5,
    monitor_url: 'https://job.example.org/ci/{job_id}',
    ...launcher,
  };
  return `models:\n  - id: ${id}\n    engine: sim\n    startup_timeout_s: 60\n    idle_ttl_s: ${idleTtlS}\n    options:\n      max_num_seqs: 4\n    sim: ${JSON.stringify({ output_tokens: 8, ...sim })}\n    launcher: ${JSON.stringify(l)}\n`;
}

const ENV = { REQUEST_MAX_ATTEMPTS: '10' };

async function modelsDetail(
  server: TestServer,
  id: string,
): Promise<{ state: string; detail: string | null; launcher: string }> {
  const body = (await (await fetch(`${server.baseUrl}/v1/models`)).json()) as {
    data: { id: string; state: string; detail: string | null; launcher: string }[];
  };
  return body.data.find((m) => m.id === id)!;
}

async function until<T>(
  what: string,
  f: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

async function runBatch(server: TestServer, model: string, n: number) {
  const file = await server.client.files.create({
    file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(n, model))),
    purpose: 'batch',
  });
  return server.client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
}

let server: TestServer | undefined;
const names: string[] = [];
const blockers: string[] = [];
afterEach(async () => {
  await server?.close();
  server = undefined;
  scancel(...blockers.splice(0));
  for (const n of names) scancelNamed(n); // a job kept at shutdown (on_shutdown: keep) too
});
afterAll(() => {
  for (const n of names) scancelNamed(n);
});

describe.skipIf(!cluster.ok)('engines as SLURM jobs (real cluster)', () => {
  it('runs a whole batch on a sim engine started by sbatch, then cancels the job at shutdown', async () => {
    const model = 'slurm-flow';
    names.push(`bw-${model}`);
    server = await startTestServer({ worker: true, modelsYaml: modelsYaml(model), env: ENV });
    const b = await runBatch(server, model, 30);
    const done = await waitForBatch(server.client, b.id, ['completed', 'failed'], 120_000);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 30, completed: 30, failed: 0 });
    const out = await readLinesOf(server.client, done.output_file_id);
    expect(out).toHaveLength(30);
    for (const l of out) expect(l.response.body.choices[0].message.content).toContain(`number ${l.custom_id.slice(4)}`);

    const jobId = recordedJob(server.dataDir, model);
    expect(jobId).toMatch(/^\d+$/);
    expect(jobsNamed(`bw-${model}`).map((j) => j.state)).toEqual(['RUNNING']);
    const m = await modelsDetail(server, model);
    expect(m.launcher).toBe('slurm');
    expect(m.state).toBe('ready');
    expect(m.detail).toContain(`SLURM job ${jobId} RUNNING`);
    expect(m.detail).toContain(`https://job.example.org/ci/${jobId}`);
    const ops = (await (await fetch(`${server.baseUrl}/ops/engines`)).json()) as
      | { data?: { model: string; detail: { jobId: string } | null }[] }
      | { model: string; detail: { jobId: string } | null }[];
    const engines = Array.isArray(ops) ? ops : (ops.data ?? []);
    expect(engines.find((e) => e.model === model)?.detail?.jobId).toBe(jobId);
    // The job's output is in the engine log, with the state transitions and their durations.
    const log = modelLog(server.dataDir, model);
    expect(log).toContain(`submitted SLURM job ${jobId}`);
    expect(log).toMatch(/SLURM job \d+: (PENDING.* → RUNNING after \d+ s|RUNNING, \d+ s after submission)/);
    expect(log).toMatch(/batchwright-endpoint \S+ \d+/);

    await server.close();
    server = undefined;
    // shutdown (on_shutdown: cancel) released the allocation
    await until('the job to leave the queue', () => jobsNamed(`bw-${model}`).length === 0, 30_000);
  });

  it('idle_ttl_s releases the allocation: the job is cancelled once the model has been idle', async () => {
    const model = 'slurm-idle';
    names.push(`bw-${model}`);
    server = await startTestServer({ worker: true, modelsYaml: modelsYaml(model, {}, {}, 2), env: ENV });
    const b = await runBatch(server, model, 5);
    expect((await waitForBatch(server.client, b.id, ['completed', 'failed'], 120_000)).request_counts?.completed).toBe(
      5,
    );
    const jobId = recordedJob(server.dataDir, model);
    await until(
      'the idle job to be cancelled',
      () => modelLog(server!.dataDir, model).includes(`cancelled SLURM job ${jobId} (allocation released)`),
      30_000,
    );
    expect(jobsNamed(`bw-${model}`)).toEqual([]);
    expect(recordedJob(server.dataDir, model)).toBeNull();
    await until('state unloaded', async () => (await modelsDetail(server!, model)).state === 'unloaded', 10_000);
  });

  it('reports the queue position of a job held PENDING behind others, then runs the batch once they go', async () => {
    const model = 'slurm-queue';
    names.push(`bw-${model}`);
    // A blocker takes both CPUs; a filler (-c 1) queues before our job.
    blockers.push(sbatch(['-J', 'bw-test-blocker', '-o', '/dev/null', '-c', '2', '-t', '5', '--wrap', 'sleep 600']));
    await until('the blocker to run', () => jobsNamed('bw-test-blocker')[0]?.state === 'RUNNING', 30_000);
    blockers.push(sbatch(['-J', 'bw-test-filler', '-o', '/dev/null', '-c', '1', '-t', '5', '--wrap', 'sleep 600']));
    server = await startTestServer({ worker: true, modelsYaml: modelsYaml(model), env: ENV });
    const b = await runBatch(server, model, 10);
    const pending = await until('position 2 of 2 in /v1/models', async () => {
      const m = await modelsDetail(server!, model);
      return m.detail && /PENDING .*position 2 of 2 pending/.test(m.detail) ? m : null;
    });
    expect(pending.state).toBe('loading');
    expect(pending.detail).toMatch(/\((Resources|Priority)\)/);
    expect(pending.detail).toMatch(/GPUs free/);
    expect(pending.detail).toMatch(/estimated start|no start estimate yet/);
    // squeue --start fills in an estimate within a backfill pass (bf_interval=5) for jobs with a time limit
    const est = await until(
      'a start estimate',
      async () => {
        const m = await modelsDetail(server!, model);
        return m.detail?.includes('estimated start') ? m.detail : null;
      },
      30_000,
    );
    expect(est).toMatch(/estimated start \d{4}-\d\d-\d\dT/);
    expect((await server.client.batches.retrieve(b.id)).request_counts?.completed ?? 0).toBe(0);

    scancel(...blockers.splice(0));
    const done = await waitForBatch(server.client, b.id, ['completed', 'failed'], 120_000);
    expect(done.request_counts).toEqual({ total: 10, completed: 10, failed: 0 });
    expect(modelLog(server.dataDir, model)).toMatch(/PENDING \((Resources|Priority)\) → .*RUNNING after \d+ (s|min)/);
  });

  it('finishes the batch after the job is cancelled mid-batch (a new job is submitted)', async () => {
    const model = 'slurm-scancel';
    names.push(`bw-${model}`);
    server = await startTestServer({
      worker: true,
      modelsYaml: modelsYaml(model, {}, { tokens_per_second: 20 }),
      env: ENV,
    });
    const b = await runBatch(server, model, 60);
    await until(
      'some results',
      async () => ((await server!.client.batches.retrieve(b.id)).request_counts?.completed ?? 0) >= 5,
      120_000,
    );
    const first = recordedJob(server.dataDir, model)!;
    scancel(first);
    const done = await waitForBatch(server.client, b.id, ['completed', 'failed'], 180_000);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 60, completed: 60, failed: 0 });
    const second = recordedJob(server.dataDir, model);
    expect(second).not.toBe(first);
    const log = modelLog(server.dataDir, model);
    expect(log).toContain(`submitted SLURM job ${first}`);
    expect(log).toContain(`submitted SLURM job ${second}`);
    expect(log).toMatch(new RegExp(`SLURM job ${first} ended`));
  });

  it('replaces a job before its time limit: a new job takes over, the old one is cancelled, the batch completes', async () => {
    const model = 'slurm-replace';
    names.push(`bw-${model}`);
    // A 1-minute time limit, replaced when 45 s are left: the first replacement after ~15 s.
    server = await startTestServer({
      worker: true,
      modelsYaml: modelsYaml(model, { time: '1', replace_before_s: 45 }, { tokens_per_second: 16 }),
      env: ENV,
    });
    const b = await runBatch(server, model, 200);
    const first = await until('the first job id', () => recordedJob(server!.dataDir, model), 60_000);
    const second = await until(
      'a replacement job',
      () => {
        const id = recordedJob(server!.dataDir, model);
        return id && id !== first ? id : null;
      },
      90_000,
    );
    const done = await waitForBatch(server.client, b.id, ['completed', 'failed'], 180_000);
    expect(done.request_counts).toEqual({ total: 200, completed: 200, failed: 0 });
    const log = modelLog(server.dataDir, model);
    expect(log).toMatch(new RegExp(`SLURM job ${first}: \\d+ s left of the time limit: asking for a replacement job`));
    expect(log).toContain(`submitted SLURM job ${second}`);
    // the old job is cancelled after a grace period, well before its time limit would end it as TIMEOUT
    await until('the first job to be cancelled', () => !jobsNamed(`bw-${model}`).some((j) => j.id === first), 60_000);
    expect(log.includes('TIMEOUT')).toBe(false);
  });

  it('reconnects to the still-running job after a worker restart instead of submitting another', async () => {
    const model = 'slurm-reconnect';
    names.push(`bw-${model}`);
    server = await startTestServer({ modelsYaml: modelsYaml(model, { on_shutdown: 'keep' }), env: ENV });
    const w1 = await server.startWorker();
    const b1 = await runBatch(server, model, 10);
    expect((await waitForBatch(server.client, b1.id, ['completed', 'failed'], 120_000)).request_counts?.completed).toBe(
      10,
    );
    const jobId = recordedJob(server.dataDir, model);
    await w1.close();
    expect(jobsNamed(`bw-${model}`).map((j) => j.id)).toEqual([jobId]); // kept running

    await server.startWorker();
    const b2 = await runBatch(server, model, 10);
    expect((await waitForBatch(server.client, b2.id, ['completed', 'failed'], 120_000)).request_counts?.completed).toBe(
      10,
    );
    expect(recordedJob(server.dataDir, model)).toBe(jobId);
    expect(jobsNamed(`bw-${model}`).map((j) => j.id)).toEqual([jobId]);
    const log = modelLog(server.dataDir, model);
    expect(log.match(/submitted SLURM job/g)).toHaveLength(1);
    expect(log).toContain(`reconnected to SLURM job ${jobId}`);
  });

  // Stops slurmctld (the one scripts/slurm-cluster.sh started) and starts it again before the next test.
  it('a controller that is down: every call times out and says the controller is unreachable', async (ctx) => {
    const pidFile = path.join(process.env['SLURM_RUN_DIR'] ?? '/tmp/slurm-ci', 'slurmctld.pid');
    if (!existsSync(pidFile)) return ctx.skip(); // not the cluster our script runs: leave it alone
    const pid = Number(readFileSync(pidFile, 'utf8'));
    process.kill(pid, 'SIGTERM');
    await until(
      'slurmctld to stop',
      () =>
        spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' })
          .stdout.trim()
          .replace(/^Z.*/, '') === '',
      20_000,
    );
    try {
      const s = new SlurmScheduler(execRunner({ timeoutMs: 3_000 }), 3_000);
      const status = (await s.status('1').catch((e: unknown) => e)) as Error;
      expect(status).toBeInstanceOf(SchedulerUnavailableError);
      expect(status.message).toMatch(
        /^squeue (did not answer within 3 s: the SLURM controller is unreachable or overloaded|cannot reach the SLURM controller)/,
      );
      const script = path.join(mkdtempSync(path.join(tmpdir(), 'bw-slurm-down-')), 'job.sh');
      writeFileSync(script, '#!/bin/bash\n#SBATCH -c 1\ntrue\n');
      const submit = (await s.submit(script).catch((e: unknown) => e)) as Error;
      expect(submit).toBeInstanceOf(SchedulerUnavailableError);
      expect(submit.message).toMatch(/^sbatch (did not answer within 3 s|cannot reach the SLURM controller)/);
    } finally {
      spawnSync('slurmctld');
      await until(
        'slurmctld back',
        () =>
          /idle|mix|alloc/.test(
            spawnSync('sinfo', ['-h', '-o', '%T'], { encoding: 'utf8', timeout: 15_000 }).stdout ?? '',
          ),
        60_000,
      );
    }
  }, 120_000);

  describe('jobs SLURM refuses or can never start are explained in one line', () => {
    const manager = (launcher: Record<string, unknown>) => {
      const dir = mkdtempSync(path.join(tmpdir(), 'bw-slurm-mm-'));
      const models = parseModelsYaml(modelsYaml('slurm-bad', launcher), 'models.yaml');
      return new ModelManager({ models, logDir: path.join(dir, 'logs'), log: createLogger('silent'), maxRestarts: 1 });
    };

    it.each([
      [
        'an unknown partition',
        { partition: 'no-such-partition' },
        /SLURM rejected the job: unknown partition "no-such-partition" — set launcher.partition/,
      ],
      [
        'too much memory',
        { mem: '9999G' },
        /SLURM rejected the job: more memory than any node of the partition has — lower launcher.mem/,
      ],
      [
        'too many GPUs',
        { gpus: 8 },
        /SLURM rejected the job: no node of the partition has what it asks for \(too many GPUs/,
      ],
    ])('%s', async (_what, launcher, message) => {
      const m = manager(launcher);
      try {
        const err = (await m.ensureReady('slurm-bad').catch((e: unknown) => e)) as Error & { code: string };
        expect(err.code).toBe('ENGINE_START_FAILED');
        expect(err.message).toMatch(message);
        expect(err.message.split('\n')).toHaveLength(1);
        const info = m.info('slurm-bad');
        expect(info.state).toBe('failed');
        expect(info.detail?.text).toMatch(message);
      } finally {
        await m.shutdown();
      }
    });

    it('more CPUs than the node has: PENDING (PartitionConfig) is explained and the job cancelled', async () => {
      names.push('bw-slurm-bad');
      const m = manager({ cpus: 64 });
      try {
        const err = (await m.ensureReady('slurm-bad').catch((e: unknown) => e)) as Error;
        expect(err.message).toMatch(
          /SLURM job can never start \(PENDING, reason PartitionConfig\): it asks for more than the partition offers .* job \d+ cancelled/,
        );
        await until('the job to be gone', () => jobsNamed('bw-slurm-bad').length === 0, 30_000);
      } finally {
        await m.shutdown();
      }
    });
  });
});
