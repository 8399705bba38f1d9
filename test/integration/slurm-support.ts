import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/slurm-cluster.sh', import.meta.url));

function run(cmd: string, args: string[], timeoutMs = 20_000): { rc: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { rc: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function clusterUp(): boolean {
  const r = run('sinfo', ['-h', '-o', '%T'], 15_000);
  return r.rc === 0 && /idle|mix|alloc|comp/.test(r.out);
}

/**
 * A real single-node SLURM cluster for these tests: reused when sinfo answers, else brought up
 * with scripts/slurm-cluster.sh (installs slurm-wlm and munge from Debian on first use, as
 * root, ~10-60 s). `reason` says why it is not available (not root, not Debian, setup failed).
 */
export function ensureSlurmCluster(): { ok: true } | { ok: false; reason: string } {
  if (process.env['BW_SKIP_SLURM'] === '1') return { ok: false, reason: 'BW_SKIP_SLURM=1' };
  if (clusterUp()) return { ok: true };
  if (process.platform !== 'linux' || process.getuid?.() !== 0)
    return {
      ok: false,
      reason: 'no SLURM cluster answers and bringing one up needs root on Linux (scripts/slurm-cluster.sh)',
    };
  const osr = existsSync('/etc/os-release') ? readFileSync('/etc/os-release', 'utf8') : '';
  if (!/^ID=debian/m.test(osr))
    return { ok: false, reason: 'no SLURM cluster answers and scripts/slurm-cluster.sh supports Debian 12 only' };
  const haveSbatch =
    run('sh', ['-c', 'command -v sbatch slurmctld slurmd munged']).out.split('\n').filter(Boolean).length >= 4;
  const r = spawnSync('bash', [SCRIPT], {
    encoding: 'utf8',
    timeout: 600_000,
    env: { ...process.env, ...(haveSbatch && { SKIP_APT: '1' }) },
  });
  if (r.status !== 0 || !clusterUp())
    return {
      ok: false,
      reason: `scripts/slurm-cluster.sh failed (rc ${r.status}): ${`${r.stdout}${r.stderr}`.trim().split('\n').slice(-5).join(' | ')}`,
    };
  return { ok: true };
}

/** Job ids (as strings) of the jobs named `name`, any state squeue still shows without -t all. */
export function jobsNamed(name: string): { id: string; state: string; reason: string }[] {
  const out = execFileSync('squeue', ['-h', '-n', name, '-o', '%i|%T|%r'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [id = '', state = '', reason = ''] = l.split('|');
      return { id, state, reason };
    });
}

export function sbatch(args: string[]): string {
  return execFileSync('sbatch', ['--parsable', ...args], { encoding: 'utf8' })
    .trim()
    .split(';')[0]!;
}

export function scancel(...ids: string[]): void {
  if (ids.length) spawnSync('scancel', ids);
}

export function scancelNamed(name: string): void {
  spawnSync('scancel', ['-n', name]);
}

export function modelLog(dataDir: string, model: string): string {
  const f = path.join(dataDir, 'logs', `${model}.log`);
  return existsSync(f) ? readFileSync(f, 'utf8') : '';
}

export function recordedJob(dataDir: string, model: string): string | null {
  const f = path.join(dataDir, 'launchers', `${model}.job.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as { jobId: string }).jobId : null;
}
