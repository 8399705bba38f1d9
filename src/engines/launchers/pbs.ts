import { describeFailure, firstLines, type CommandResult, type CommandRunner } from './runner.js';
import { JobRejectedError, SchedulerUnavailableError, type JobStatus, type Scheduler } from './scheduler.js';

/**
 * PBS (OpenPBS / PBS Professional) through qsub, qstat -f, qstat <queue>, pbsnodes -a and qdel.
 * Same launcher code path as SLURM; only the commands, their output and the states differ.
 * Tested on recorded outputs (test/fixtures/pbs): OpenPBS is not packaged for Debian.
 */
export class PbsScheduler implements Scheduler {
  readonly kind = 'pbs' as const;
  readonly name = 'PBS';

  constructor(
    private readonly run: CommandRunner,
    private readonly timeoutMs: number,
  ) {}

  async submit(scriptFile: string): Promise<string> {
    const r = await this.run('qsub', [scriptFile]);
    if (r.rc === 0) {
      const id = r.stdout.trim().split('\n').pop()?.trim();
      if (id && /^\d+(\[\d*\])?(\.\S+)?$/.test(id)) return id;
      throw new JobRejectedError(`qsub printed no job id: ${firstLines(r.stdout) || '(nothing)'}`);
    }
    this.unavailable('qsub', r);
    throw new JobRejectedError(explainQsubError(r.stderr || r.stdout));
  }

  async status(jobId: string): Promise<JobStatus | null> {
    const r = await this.run('qstat', ['-f', jobId]);
    if (r.rc !== 0) {
      // "Unknown Job Id" (gone), or "Job has finished, use -x or -H" (kept as history).
      if (/unknown job id|job has finished/i.test(r.stderr)) return null;
      this.unavailable('qstat', r, true);
    }
    return parseQstatJob(r.stdout);
  }

  async queuePosition(jobId: string, queue?: string): Promise<{ position: number; pending: number } | null> {
    const r = await this.run('qstat', queue ? [queue] : []);
    if (r.rc !== 0) this.unavailable('qstat', r, true);
    return parseQstatQueuePosition(r.stdout, jobId);
  }

  async estimatedStart(jobId: string): Promise<number | null> {
    const r = await this.run('qstat', ['-f', jobId]);
    if (r.rc !== 0) return null;
    const v = parseQstatAttributes(r.stdout)['estimated.start_time'];
    return v ? parsePbsTime(v) : null;
  }

  async gpusFree(queue?: string): Promise<{ free: number; total: number } | null> {
    const r = await this.run('pbsnodes', ['-a']);
    if (r.rc !== 0) {
      this.unavailable('pbsnodes', r, true);
      return null;
    }
    return parsePbsnodesGpus(r.stdout, queue);
  }

  async cancel(jobId: string): Promise<void> {
    const r = await this.run('qdel', [jobId]);
    if (r.rc === 0 || /unknown job id|job has finished|request invalid for state of job/i.test(r.stderr)) return;
    this.unavailable('qdel', r, true);
  }

  private unavailable(cmd: string, r: CommandResult, always = false): void {
    let msg = describeFailure(this.name, cmd, r, this.timeoutMs);
    if (/cannot connect to server|connection refused|pbs_connect/i.test(r.stderr))
      msg = `${cmd} cannot reach the PBS server (${firstLines(r.stderr)}) — check that pbs_server runs and PBS_SERVER is right`;
    if (r.timedOut || r.missing || /cannot reach/.test(msg) || always) throw new SchedulerUnavailableError(msg);
  }
}

/** qsub's error as one line saying what to change (OpenPBS messages). */
export function explainQsubError(stderr: string): string {
  const said = `(qsub: ${firstLines(stderr.replace(/^qsub: /gm, '')) || 'no output'})`;
  if (/unknown queue/i.test(stderr))
    return `PBS rejected the job: unknown queue — set launcher.partition to a queue that \`qstat -Q\` lists ${said}`;
  if (/exceeds queue resource limits|exceeds server resource limits|exceed.*limit/i.test(stderr)) {
    return `PBS rejected the job: it asks for more than the queue allows (CPUs, GPUs, memory or walltime) — lower launcher.cpus/gpus/mem/time (\`qstat -Qf <queue>\`) ${said}`;
  }
  if (/insufficient amount of resource|can never run/i.test(stderr))
    return `PBS rejected the job: no node has what it asks for — lower launcher.gpus/cpus/mem ${said}`;
  if (/unknown resource/i.test(stderr))
    return `PBS rejected the job: a resource name this server does not know (ngpus?) — check launcher.gpus and launcher.submit_args ${said}`;
  if (/illegal attribute or resource value/i.test(stderr))
    return `PBS rejected the job: a malformed value (mem like 64gb, walltime like 01:00:00) — check the launcher block ${said}`;
  if (/unauthorized request|not authorized|account/i.test(stderr))
    return `PBS rejected the job: not allowed for this user/project — check launcher.account and the queue's access ${said}`;
  return `PBS rejected the job ${said}`;
}

/** `qstat -f` text → attribute map (continuation lines, which start with a tab, joined). */
export function parseQstatAttributes(text: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  let last: string | null = null;
  for (const raw of text.split('\n')) {
    if (/^Job Id:/.test(raw)) {
      attrs['Job Id'] = raw.slice(7).trim();
      continue;
    }
    const m = /^\s{4}(\S+) = (.*)$/.exec(raw);
    if (m) {
      last = m[1]!;
      attrs[last] = m[2]!;
    } else if (last && /^\t/.test(raw)) attrs[last] += raw.trim();
  }
  return attrs;
}

/**
 * PBS job states: Q queued, H held, W waiting for its start time, T moving, S suspended →
 * pending; R running, B (array) begun; E exiting; F finished, X (subjob) done.
 */
export function parseQstatJob(text: string): JobStatus | null {
  const a = parseQstatAttributes(text);
  const state = a['job_state'];
  if (!state) return null;
  const phase: JobStatus['phase'] = 'QHWTSU'.includes(state)
    ? 'pending'
    : state === 'R' || state === 'B'
      ? 'running'
      : state === 'E'
        ? 'ending'
        : 'ended';
  const comment = a['comment'] ?? null;
  const node = a['exec_host'] ? a['exec_host'].split('+')[0]!.split('/')[0]! : null;
  const limit = a['Resource_List.walltime'] ? hms(a['Resource_List.walltime']) : null;
  const used = a['resources_used.walltime'] ? hms(a['resources_used.walltime']) : 0;
  const timeLeftS = phase === 'running' && limit !== null ? Math.max(0, limit - (used ?? 0)) : null;
  const never =
    phase === 'pending' && comment && /can never run/i.test(comment)
      ? `PBS job can never start (${comment}): lower launcher.cpus/gpus/mem/nodes or pick another queue`
      : null;
  return { phase, state, reason: comment, node, timeLeftS, neverStarts: never };
}

/** Rank among the queued (Q) jobs of the `qstat` table, in its order (submission order). */
export function parseQstatQueuePosition(text: string, jobId: string): { position: number; pending: number } | null {
  const queued: string[] = [];
  for (const line of text.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 6 || !/^\d/.test(cols[0]!)) continue;
    if (cols[4] === 'Q') queued.push(cols[0]!);
  }
  // The table may clip ids (`1234.pbs-serv*`): match on the numeric part.
  const num = (id: string) => /^(\d+(\[\d*\])?)/.exec(id)?.[1] ?? id;
  const i = queued.map(num).indexOf(num(jobId));
  return i < 0 ? null : { position: i + 1, pending: queued.length };
}

/** `pbsnodes -a` → GPUs free (resources_available.ngpus − resources_assigned.ngpus) on nodes that take jobs. */
export function parsePbsnodesGpus(text: string, queue?: string): { free: number; total: number } | null {
  let free = 0;
  let total = 0;
  let any = false;
  for (const block of text.split(/\n\s*\n/)) {
    const a: Record<string, string> = {};
    for (const line of block.split('\n')) {
      const m = /^\s+(\S+) = (.*)$/.exec(line);
      if (m) a[m[1]!] = m[2]!.trim();
    }
    const avail = Number(a['resources_available.ngpus'] ?? NaN);
    if (!Number.isFinite(avail)) continue;
    if (queue && a['queue'] && a['queue'] !== queue) continue;
    any = true;
    total += avail;
    if (/down|offline|unknown|stale|state-unknown|unresolvable/i.test(a['state'] ?? '')) continue;
    free += Math.max(0, avail - Number(a['resources_assigned.ngpus'] ?? 0));
  }
  return any ? { free, total } : null;
}

/** `Tue Dec  1 10:00:00 2026` (PBS's ctime format, local time) → ms epoch. */
export function parsePbsTime(text: string): number | null {
  const t = Date.parse(text.replace(/\s+/g, ' ').trim());
  return Number.isFinite(t) ? t : null;
}

function hms(t: string): number | null {
  const p = t.split(':').map(Number);
  if (p.some((x) => !Number.isFinite(x))) return null;
  return p.reduce((acc, x) => acc * 60 + x, 0);
}
