import type { LauncherConfig } from '../../config/models.js';
import { PbsScheduler } from './pbs.js';
import { execRunner, type CommandRunner } from './runner.js';
import type { Scheduler } from './scheduler.js';
import { SlurmScheduler } from './slurm.js';

export { BatchJobEngine, type BatchJobEngineOptions } from './batch-job.js';
export type { EngineDetail, EngineInstance } from './types.js';

/**
 * The batch system of a launcher block, talking through `runner` (default: the real commands
 * with the block's timeout and bin_dir). `local` engines have no launcher and no scheduler.
 */
export function schedulerFor(l: LauncherConfig, runner?: CommandRunner): Scheduler {
  const timeoutMs = l.command_timeout_s * 1000;
  const run = runner ?? execRunner({ timeoutMs, binDir: l.bin_dir });
  return l.kind === 'pbs' ? new PbsScheduler(run, timeoutMs) : new SlurmScheduler(run, timeoutMs);
}
