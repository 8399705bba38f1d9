import { execFile } from 'node:child_process';
import path from 'node:path';

/** One batch-system command's outcome. `timedOut`: killed after the timeout (rc is then null). */
export interface CommandResult {
  rc: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The executable was not found (ENOENT). */
  missing: boolean;
  ms: number;
}

/** Runs one command of the batch system (`sbatch`, `squeue`, `qstat`…): argv only, never a shell. */
export type CommandRunner = (
  cmd: string,
  args: readonly string[],
  opts?: { timeoutMs?: number },
) => Promise<CommandResult>;

/**
 * The real runner: execFile with a timeout (SIGKILL), output capped at 4 MiB. `binDir`, when
 * set, is where the commands live (clusters that keep them off the worker's PATH).
 */
export function execRunner(defaults: { timeoutMs: number; binDir?: string | undefined }): CommandRunner {
  return (cmd, args, opts = {}) =>
    new Promise((resolve) => {
      const file = defaults.binDir ? path.join(defaults.binDir, cmd) : cmd;
      const t0 = Date.now();
      execFile(
        file,
        [...args],
        {
          timeout: opts.timeoutMs ?? defaults.timeoutMs,
          killSignal: 'SIGKILL',
          maxBuffer: 4 * 1024 * 1024,
          encoding: 'utf8',
        },
        (err, stdout, stderr) => {
          const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
          const missing = e?.code === 'ENOENT';
          const timedOut = !!e?.killed && !missing;
          const rc = !e ? 0 : typeof e.code === 'number' ? e.code : null;
          resolve({
            rc,
            stdout: stdout ?? '',
            stderr: missing ? `${file}: command not found` : (stderr ?? ''),
            timedOut,
            missing,
            ms: Date.now() - t0,
          });
        },
      );
    });
}

/** The error a failed call becomes: says which command, how it failed, and what it printed. */
export class SchedulerCommandError extends Error {
  override name = 'SchedulerCommandError';
  constructor(
    message: string,
    readonly result: CommandResult,
  ) {
    super(message);
  }
}

/**
 * Why a call failed, in one line: a timeout means the controller is unreachable (a down
 * slurmctld makes every client wait ~10-20 s before failing), a missing binary means the
 * worker is not on a login node.
 */
export function describeFailure(system: string, cmd: string, r: CommandResult, timeoutMs: number): string {
  if (r.missing) return `${cmd} not found: run the worker on a ${system} login node (or set launcher.bin_dir)`;
  if (r.timedOut)
    return `${cmd} did not answer within ${Math.round(timeoutMs / 1000)} s: the ${system} controller is unreachable or overloaded — check that it runs (e.g. \`${system === 'SLURM' ? 'scontrol ping' : 'qstat -B'}\`)`;
  const text = firstLines(r.stderr || r.stdout);
  if (
    /unable to contact slurm controller|connection refused|communications? (connection )?failure|socket timed out/i.test(
      text,
    )
  ) {
    return `${cmd} cannot reach the ${system} controller (${text}) — check that slurmctld runs and this host can reach it`;
  }
  return `${cmd} failed with code ${r.rc}: ${text || '(no output)'}`;
}

export function firstLines(text: string, n = 3): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(0, n)
    .join(' | ')
    .slice(0, 500);
}
