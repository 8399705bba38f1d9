import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isPortOpen } from '../../src/engines/net.js';
import { afterEach, describe, expect, it } from 'vitest';
import { parseModelsYaml } from '../../src/config/load.js';
import { launcherOf } from '../../src/config/models.js';
import { BatchJobEngine } from '../../src/engines/launchers/batch-job.js';
import { WaitHistory } from '../../src/engines/launchers/job-store.js';
import type { CommandResult, CommandRunner } from '../../src/engines/launchers/runner.js';
import { SlurmScheduler } from '../../src/engines/launchers/slurm.js';
import type { EngineDetail } from '../../src/engines/launchers/types.js';
import { createLogger } from '../../src/log/logger.js';

const ok = (stdout: string): CommandResult => ({ rc: 0, stdout, stderr: '', timedOut: false, missing: false, ms: 1 });
const hung: CommandResult = { rc: null, stdout: '', stderr: '', timedOut: true, missing: false, ms: 20_000 };

/** A scripted SLURM: `state()` says what squeue reports for job 42 right now ('HUNG': squeue times out). */
function fakeSlurm(state: () => string, extra: { start?: string; onSubmit?: () => void } = {}) {
  const calls: string[] = [];
  let cancelled = false;
  const run: CommandRunner = async (cmd, args) => {
    calls.push(`${cmd} ${args.join(' ')}`);
    if (cmd === 'sbatch') {
      extra.onSubmit?.();
      return ok('42\n');
    }
    if (cmd === 'scancel') {
      cancelled = true;
      return ok('');
    }
    if (cancelled) return ok(''); // squeue no longer lists a cancelled job
    if (cmd === 'sinfo') return ok('n1|gpu:a40:4|gpu:a40:3(IDX:0-2)|mix\n');
    const s = state();
    if (s === 'HUNG') return hung;
    if (args.includes('--start')) return ok(`${extra.start ?? 'N/A'}\n`);
    if (args.includes('PD')) return ok(s.startsWith('PENDING') ? '40 100 Resources\n42 90 Priority\n' : '');
    return ok(s ? `${s}\n` : '');
  };
  return { run, calls };
}

function engine(
  stateDir: string,
  run: CommandRunner,
  launcher = '{ kind: slurm, partition: alvis, gpus: "A40:1", time: "1:00:00", poll_s: 0.05, replace_before_s: 120, monitor_url: "https://job.c3se.chalmers.se/alvis/{job_id}" }',
  ssh?: string,
) {
  const [m] = parseModelsYaml(`models:\n  - id: m\n    engine: sim\n    launcher: ${launcher}\n`, 'models.yaml');
  const l = launcherOf(m!)!;
  return new BatchJobEngine({
    model: m!,
    launcher: l,
    scheduler: new SlurmScheduler(run, 20_000),
    logFile: path.join(stateDir, 'm.log'),
    log: createLogger('silent'),
    stateDir,
    startupTimeoutMs: 10_000,
    healthIntervalMs: 50,
    ...(ssh && { ssh }),
  });
}

const engines: BatchJobEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
});

async function untilDetail(e: BatchJobEngine, re: RegExp, ms = 5_000): Promise<EngineDetail> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (re.test(e.detail().text)) return e.detail();
    await sleep(20);
  }
  throw new Error(`detail never matched ${re}: ${e.detail().text}`);
}

describe('BatchJobEngine while the job waits', () => {
  it('reports position, free GPUs and the monitoring URL; with no SLURM estimate, the median of recorded waits of the same shape', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    const h = new WaitHistory(path.join(dir, 'waits.json'));
    for (const w of [60_000, 120_000, 600_000]) h.record('slurm|alvis|A40:1|||1|1:00:00', w);
    const { run } = fakeSlurm(() => 'PENDING|Priority||1:00:00');
    const e = engine(dir, run);
    engines.push(e);
    const started = e.start().catch((err: Error) => err);
    const d = await untilDetail(e, /position/);
    expect(d).toMatchObject({
      jobId: '42',
      jobState: 'PENDING',
      reason: 'Priority',
      queuePosition: 2,
      queueLength: 2,
      gpusFree: 1,
      gpusTotal: 4,
      estimateSource: 'history',
      monitorUrl: 'https://job.c3se.chalmers.se/alvis/42',
    });
    expect(d.text).toMatch(
      /^SLURM job 42 PENDING \(Priority\) for \d+ s: position 2 of 2 pending, estimated start \S+Z \(median wait of the last 3 jobs of this shape: 2 min\), 1 of 4 GPUs free in partition alvis — https:\/\/job.c3se.chalmers.se\/alvis\/42$/,
    );
    expect(d.estimatedStart! - Date.now()).toBeGreaterThan(100_000);
    await e.stop();
    expect(await started).toMatchObject({ code: 'ENGINE_EXITED' });
  });

  it("prefers SLURM's own estimate when squeue --start has one", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    const { run } = fakeSlurm(() => 'PENDING|Resources||1:00:00', { start: '2030-01-02T03:04:05' });
    const e = engine(dir, run);
    engines.push(e);
    void e.start().catch(() => undefined);
    const d = await untilDetail(e, /estimated start/);
    expect(d.estimateSource).toBe('scheduler');
    expect(d.estimatedStart).toBe(new Date(2030, 0, 2, 3, 4, 5).getTime());
    expect(d.text).toContain("(SLURM's estimate)");
  });

  it('a controller that hangs is reported as unreachable, and the wait goes on when it answers again', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    let s = 'PENDING|Priority||1:00:00';
    const { run } = fakeSlurm(() => s);
    const e = engine(dir, run);
    engines.push(e);
    void e.start().catch(() => undefined);
    await untilDetail(e, /position/);
    s = 'HUNG';
    const d = await untilDetail(e, /unreachable/);
    expect(d.text).toMatch(
      /^SLURM job 42: squeue did not answer within 20 s: the SLURM controller is unreachable or overloaded/,
    );
    s = 'PENDING|Priority||1:00:00';
    await untilDetail(e, /position 2 of 2/);
  });
});

describe('BatchJobEngine once running', () => {
  it('reaches the engine at the node:port the job wrote, and asks for a replacement near the time limit', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    const srv = http.createServer((_q, r) => r.end('ok')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as AddressInfo).port;
    let left = '50:00';
    const { run, calls } = fakeSlurm(() => `RUNNING|None|localhost|${left}`, {
      onSubmit: () => writeFileSync(path.join(dir, 'm', 'endpoint.42'), `127.0.0.1 ${port}\n`),
    });
    const e = engine(dir, run);
    engines.push(e);
    try {
      await e.start();
      expect(e.baseUrl).toBe(`http://127.0.0.1:${port}`);
      expect(e.detail().text).toMatch(/^SLURM job 42 RUNNING on localhost, engine at 127.0.0.1:\d+, 50 min left/);
      const expiring = new Promise<{ timeLeftS: number }>((r) => e.once('expiring', r));
      left = '1:59';
      expect(await expiring).toEqual({ timeLeftS: 119 });
      await e.stop();
      expect(calls).toContain('scancel 42');
    } finally {
      srv.close();
    }
  });

  it('through an ssh tunnel: ssh -N -L to the node via the login host, the engine reached on loopback, the tunnel closed on stop', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    const srv = http.createServer((_q, r) => r.end('ok')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as AddressInfo).port;
    const sshLog = path.join(dir, 'ssh.log');
    process.env['FAKE_SSH_LOG'] = sshLog;
    const { run } = fakeSlurm(() => 'RUNNING|None|localhost|50:00', {
      onSubmit: () => writeFileSync(path.join(dir, 'm', 'endpoint.42'), `127.0.0.1 ${port}\n`),
    });
    const fakeSsh = fileURLToPath(new URL('../fixtures/ssh/fake-ssh.mjs', import.meta.url));
    const e = engine(
      dir,
      run,
      '{ kind: slurm, poll_s: 0.05, tunnel: { host: login1.example.org, user: me } }',
      fakeSsh,
    );
    engines.push(e);
    try {
      await e.start();
      const local = Number(new URL(e.baseUrl).port);
      expect(e.baseUrl).toBe(`http://127.0.0.1:${local}`);
      expect(local).not.toBe(port);
      expect(JSON.parse(readFileSync(sshLog, 'utf8').trim())).toEqual([
        '-N',
        '-L',
        `127.0.0.1:${local}:127.0.0.1:${port}`,
        '-o',
        'ExitOnForwardFailure=yes',
        '-o',
        'BatchMode=yes',
        '-o',
        'ServerAliveInterval=15',
        '-o',
        'ServerAliveCountMax=3',
        'me@login1.example.org',
      ]);
      expect(await (await fetch(`${e.baseUrl}/health`)).text()).toBe('ok');
      expect(e.detail().text).toContain(`via ssh tunnel http://127.0.0.1:${local}`);
      await e.stop();
      for (let i = 0; i < 50 && (await isPortOpen(local)); i++) await sleep(50);
      expect(await isPortOpen(local)).toBe(false);
    } finally {
      delete process.env['FAKE_SSH_LOG'];
      srv.close();
    }
  });

  it('a job that leaves the queue is reported as an exit with a message', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-bj-'));
    const srv = http.createServer((_q, r) => r.end('ok')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as AddressInfo).port;
    let st = 'RUNNING|None|localhost|50:00';
    const { run } = fakeSlurm(() => st, {
      onSubmit: () => writeFileSync(path.join(dir, 'm', 'endpoint.42'), `127.0.0.1 ${port}\n`),
    });
    const e = engine(dir, run);
    engines.push(e);
    try {
      await e.start();
      const exit = new Promise<{ message?: string }>((r) => e.once('exit', r));
      st = '';
      expect((await exit).message).toMatch(
        /^SLURM job 42 ended \(no longer in the queue: finished, cancelled or timed out\)/,
      );
      expect(e.isRunning).toBe(false);
    } finally {
      srv.close();
    }
  });
});
