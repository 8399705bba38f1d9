/**
 * What the batch-job engine needs of a batch system. `slurm.ts` and `pbs.ts` implement it; the
 * rest of the launcher (submit, wait, tail, tunnel, health, reconnect, replace) is shared.
 */
export interface Scheduler {
  readonly kind: 'slurm' | 'pbs';
  /** 'SLURM' | 'PBS', for messages. */
  readonly name: string;
  /** Submits the script file; resolves with the job id, rejects with JobRejectedError or SchedulerUnavailableError. */
  submit(scriptFile: string): Promise<string>;
  /** The job now, or null when the batch system no longer lists it (finished, or unknown). */
  status(jobId: string): Promise<JobStatus | null>;
  /** Rank among pending jobs (of the partition/queue when given), or null when it is not pending. */
  queuePosition(jobId: string, partition?: string): Promise<{ position: number; pending: number } | null>;
  /** The batch system's own start estimate (ms epoch), or null when it has none. */
  estimatedStart(jobId: string): Promise<number | null>;
  /** GPUs free (and in all) on the usable nodes of the partition/queue; null when it cannot tell. */
  gpusFree(partition?: string): Promise<{ free: number; total: number } | null>;
  /** Cancels the job; a job already gone is not an error. */
  cancel(jobId: string): Promise<void>;
}

/** A job's state mapped onto what the launcher acts on. */
export interface JobStatus {
  phase: 'pending' | 'running' | 'ending' | 'ended';
  /** The batch system's word: PENDING, RUNNING, COMPLETING, Q, R, E, H… */
  state: string;
  reason: string | null;
  node: string | null;
  timeLeftS: number | null;
  /** Why this pending job can never start, in one line, or null. */
  neverStarts: string | null;
}

/** sbatch/qsub refused the job: `message` is one line saying why and what to change. */
export class JobRejectedError extends Error {
  override name = 'JobRejectedError';
}

/** The batch system's controller did not answer (timeout, connection refused, no binary). */
export class SchedulerUnavailableError extends Error {
  override name = 'SchedulerUnavailableError';
}
