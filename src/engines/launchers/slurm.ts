import { describeFailure, firstLines, type CommandResult, type CommandRunner } from './runner.js';
import { JobRejectedError, SchedulerUnavailableError, type JobStatus, type Scheduler } from './scheduler.js';

/**
 * SLURM through its commands (sbatch, squeue, sinfo, scancel), each with a timeout. Behaviour
 * measured on SLURM 22.05 (docs/notes/slurm.md): a finished job vanishes from squeue
 * (rc 0, no output), an unknown id is rc 1; bad requests fail sbatch at once with rc 1; a down
 * slurmctld makes every command hang ~10-20 s.
 */
export class SlurmScheduler implements Scheduler {
  readonly kind = 'slurm' as const;
  readonly name = 'SLURM';

  constructor(
    private readonly run: CommandRunner,
    private readonly timeoutMs: number,
  ) {}

  async submit(scriptFile: string): Promise<string> {
    const r = await this.run('sbatch', ['--parsable', scriptFile]);
    if (r.rc === 0) {
      const id = parseSbatchParsable(r.stdout);
      if (id) return id;
      throw new JobRejectedError(`sbatch printed no job id: ${firstLines(r.stdout) || '(nothing)'}`);
    }
    this.throwIfUnavailable('sbatch', r);
    throw new JobRejectedError(explainSbatchError(r.stderr || r.stdout));
  }

  async status(jobId: string): Promise<JobStatus | null> {
    const r = await this.run('squeue', ['-j', jobId, '-h', '-o', '%T|%r|%N|%L']);
    if (r.rc !== 0) {
      if (/invalid job id/i.test(r.stderr)) return null;
      this.throwIfUnavailable('squeue', r, true);
    }
    return parseSqueueJob(r.stdout);
  }

  async queuePosition(jobId: string, partition?: string): Promise<{ position: number; pending: number } | null> {
    const args = ['-t', 'PD', '--sort=-p,i', '-h', '-o', '%i %Q %r', ...(partition ? ['-p', partition] : [])];
    const r = await this.run('squeue', args);
    if (r.rc !== 0) this.throwIfUnavailable('squeue', r, true);
    return parseQueuePosition(r.stdout, jobId);
  }

  async estimatedStart(jobId: string): Promise<number | null> {
    const r = await this.run('squeue', ['--start', '-j', jobId, '-h', '-o', '%S']);
    if (r.rc !== 0) return null;
    return parseSlurmTime(r.stdout.trim());
  }

  async gpusFree(partition?: string): Promise<{ free: number; total: number } | null> {
    const r = await this.run('sinfo', [
      '-h',
      '-N',
      ...(partition ? ['-p', partition] : []),
      '-O',
      'NodeHost:|,Gres:|,GresUsed:|,StateCompact:',
    ]);
    if (r.rc !== 0) {
      this.throwIfUnavailable('sinfo', r, true);
      return null;
    }
    return parseSinfoGpus(r.stdout);
  }

  async cancel(jobId: string): Promise<void> {
    const r = await this.run('scancel', [jobId]);
    if (r.rc === 0 || /invalid job id|already completing or completed/i.test(r.stderr)) return;
    this.throwIfUnavailable('scancel', r, true);
  }

  private throwIfUnavailable(cmd: string, r: CommandResult, always = false): void {
    const msg = describeFailure(this.name, cmd, r, this.timeoutMs);
    if (r.timedOut || r.missing || /cannot reach/.test(msg) || always) throw new SchedulerUnavailableError(msg);
  }
}

/** `123` or `123;cluster` → `123`. */
export function parseSbatchParsable(stdout: string): string | null {
  const m = /^(\d+(?:_\d+)?)(?:;\S+)?\s*$/m.exec(stdout.trim());
  return m ? m[1]! : null;
}

/**
 * sbatch's stderr as one line that says what to change. The messages are SLURM's own
 * (22.05: "invalid partition specified", "Memory specification can not be satisfied",
 * "Requested node configuration is not available" for too many GPUs or CPUs per node).
 */
export function explainSbatchError(stderr: string): string {
  const text = firstLines(stderr.replace(/^sbatch: error: /gm, ''), 4);
  const said = `(sbatch: ${text || 'no output'})`;
  if (/invalid partition/i.test(stderr)) {
    const p = /invalid partition specified: (\S+)/i.exec(stderr)?.[1];
    return `SLURM rejected the job: unknown partition${p ? ` "${p}"` : ''} — set launcher.partition to one that \`sinfo -s\` lists ${said}`;
  }
  if (/memory specification can not be satisfied/i.test(stderr))
    return `SLURM rejected the job: more memory than any node of the partition has — lower launcher.mem (see \`sinfo -o '%P %m'\`) ${said}`;
  if (/invalid account|invalid account or account\/partition/i.test(stderr))
    return `SLURM rejected the job: the account is not valid here — set launcher.account to one of yours (\`sacctmgr show assoc user=$USER\`) ${said}`;
  if (/invalid qos/i.test(stderr))
    return `SLURM rejected the job: invalid QOS — set launcher.qos to one your account may use ${said}`;
  if (/time limit/i.test(stderr))
    return `SLURM rejected the job: the time limit is more than the partition allows — lower launcher.time (\`sinfo -o '%P %l'\`) ${said}`;
  if (/requested node configuration is not available|invalid generic resource|gres/i.test(stderr)) {
    return `SLURM rejected the job: no node of the partition has what it asks for (too many GPUs or CPUs per node, or a GPU type it lacks) — lower launcher.gpus/cpus or pick another partition (\`sinfo -o '%P %G %c'\`) ${said}`;
  }
  return `SLURM rejected the job ${said}`;
}

/** One line of `squeue -j ID -h -o '%T|%r|%N|%L'`; empty output = the job has finished. */
export function parseSqueueJob(stdout: string): JobStatus | null {
  const line = stdout.split('\n').find((l) => l.trim());
  if (!line) return null;
  const [state = '', reason = '', node = '', left = ''] = line.trim().split('|');
  const phase: JobStatus['phase'] =
    state === 'PENDING' ||
    state === 'CONFIGURING' ||
    state === 'REQUEUED' ||
    state === 'RESIZING' ||
    state === 'SUSPENDED'
      ? 'pending'
      : state === 'RUNNING'
        ? 'running'
        : state === 'COMPLETING' || state === 'STOPPED' || state === 'SIGNALING' || state === 'STAGE_OUT'
          ? 'ending'
          : 'ended';
  const r = reason && reason !== 'None' ? reason : null;
  return {
    phase,
    state,
    reason: r,
    node: node || null,
    timeLeftS: parseSlurmDuration(left),
    neverStarts: phase === 'pending' ? neverStartsReason(r) : null,
  };
}

/**
 * Pending reasons that never clear by themselves (the job asks for more than the partition or
 * QOS allows): explained in one line, and the job is cancelled rather than waited for.
 */
export function neverStartsReason(reason: string | null): string | null {
  if (!reason) return null;
  const why: Record<string, string> = {
    PartitionConfig:
      'it asks for more than the partition offers (CPUs, nodes or GPUs per node): lower launcher.cpus/gpus/nodes or pick another partition',
    PartitionNodeLimit: 'it asks for more nodes than the partition allows: lower launcher.nodes',
    PartitionTimeLimit: "its time limit is above the partition's: lower launcher.time",
    BadConstraints: 'no node matches its constraints: check launcher.submit_args (--constraint) and launcher.gpus',
    QOSMaxGRESPerJob: 'it asks for more GPUs than the QOS allows per job: lower launcher.gpus',
    QOSMaxCpuPerJobLimit: 'it asks for more CPUs than the QOS allows per job: lower launcher.cpus',
    QOSMaxWallDurationPerJobLimit: 'its time limit is above what the QOS allows: lower launcher.time',
    AssocMaxWallDurationPerJobLimit: 'its time limit is above what the account allows: lower launcher.time',
    InvalidAccount: 'the account is not valid: set launcher.account',
    InvalidQOS: 'the QOS is not valid: set launcher.qos',
  };
  const w = why[reason];
  return w ? `SLURM job can never start (PENDING, reason ${reason}): ${w}` : null;
}

/** Rank of `jobId` in `squeue -t PD --sort=-p,i -h -o '%i %Q %r'` (priority first, then id). */
export function parseQueuePosition(stdout: string, jobId: string): { position: number; pending: number } | null {
  const ids = stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((x): x is string => !!x);
  const i = ids.indexOf(jobId);
  return i < 0 ? null : { position: i + 1, pending: ids.length };
}

/** `2026-12-01T09:05:10` (local time, as SLURM prints it) → ms epoch; N/A, Unknown → null. */
export function parseSlurmTime(text: string): number | null {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)$/.exec(text.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  return new Date(y, mo - 1, d, h, mi, s).getTime();
}

/** SLURM durations (`%L`, `--time`): `45`, `5:00`, `1:02:03`, `2-03:04:05`, `2-03` → seconds; UNLIMITED, INVALID → null. */
export function parseSlurmDuration(text: string): number | null {
  const t = text.trim();
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(t);
  if (!m) return null;
  const days = Number(m[1] ?? 0);
  const parts = [m[2], m[3], m[4]].filter((x): x is string => x !== undefined).map(Number);
  let s: number;
  if (m[1] !== undefined)
    s = (parts[0] ?? 0) * 3600 + (parts[1] ?? 0) * 60 + (parts[2] ?? 0); // D-HH[:MM[:SS]]
  else if (parts.length === 1)
    s = parts[0]! * 60; // minutes (--time) ; squeue prints at least M:SS
  else if (parts.length === 2) s = parts[0]! * 60 + parts[1]!;
  else s = parts[0]! * 3600 + parts[1]! * 60 + parts[2]!;
  return days * 86400 + s;
}

/**
 * `sinfo -h -N -O 'NodeHost:|,Gres:|,GresUsed:|,StateCompact:'` → GPUs free on nodes that can
 * take jobs (idle, mix, alloc; not down/drain/fail/maint). Gres like `gpu:a40:4(S:0-1)`, used
 * like `gpu:a40:1(IDX:0)`; several types are summed. Nodes in several partitions are counted once.
 */
export function parseSinfoGpus(stdout: string): { free: number; total: number } | null {
  const seen = new Set<string>();
  let free = 0;
  let total = 0;
  let any = false;
  for (const line of stdout.split('\n')) {
    const [node, gres = '', used = '', state = ''] = line.trim().split('|');
    if (!node || seen.has(node)) continue;
    seen.add(node);
    const t = countGpus(gres);
    if (t === null) continue;
    any = true;
    total += t;
    if (/down|drain|drng|fail|maint|unk|boot|inval|futr|npc|pow/i.test(state)) continue;
    free += Math.max(0, t - (countGpus(used) ?? 0));
  }
  return any ? { free, total } : null;
}

/** Sum of the gpu counts in a GRES list (`gpu:a40:4(S:0-1),gpu:t4:2` → 6); null when no gpu entry. */
export function countGpus(gres: string): number | null {
  let n: number | null = null;
  for (const item of gres.split(/,(?![^(]*\))/)) {
    const m = /^gpu(?::[^:(]+)?:(\d+)/.exec(item.trim());
    if (m) n = (n ?? 0) + Number(m[1]);
  }
  return n;
}
