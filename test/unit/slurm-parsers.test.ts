import { describe, expect, it } from 'vitest';
import { describeFailure, type CommandResult } from '../../src/engines/launchers/runner.js';
import {
  countGpus,
  explainSbatchError,
  neverStartsReason,
  parseQueuePosition,
  parseSbatchParsable,
  parseSinfoGpus,
  parseSlurmDuration,
  parseSlurmTime,
  parseSqueueJob,
} from '../../src/engines/launchers/slurm.js';

// stderr as SLURM 22.05 prints it (recorded on the CI cluster, see docs/notes/slurm.md)
const STDERR = {
  partition:
    'sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified\n',
  mem: 'sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed: Requested node configuration is not available\n',
  gpus: 'sbatch: error: Batch job submission failed: Requested node configuration is not available\n',
  account: 'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n',
};

describe('sbatch output', () => {
  it('--parsable: the id, with or without the cluster name', () => {
    expect(parseSbatchParsable('1234\n')).toBe('1234');
    expect(parseSbatchParsable('1234;alvis\n')).toBe('1234');
    expect(parseSbatchParsable('Submitted batch job 1234')).toBeNull();
  });

  it('rejections become one line that says what to change', () => {
    expect(explainSbatchError(STDERR.partition)).toBe(
      'SLURM rejected the job: unknown partition "nope" — set launcher.partition to one that `sinfo -s` lists (sbatch: invalid partition specified: nope | Batch job submission failed: Invalid partition name specified)',
    );
    expect(explainSbatchError(STDERR.mem)).toMatch(
      /^SLURM rejected the job: more memory than any node of the partition has — lower launcher.mem/,
    );
    expect(explainSbatchError(STDERR.gpus)).toMatch(
      /^SLURM rejected the job: no node of the partition has what it asks for \(too many GPUs or CPUs per node/,
    );
    expect(explainSbatchError(STDERR.account)).toMatch(
      /^SLURM rejected the job: the account is not valid here — set launcher.account/,
    );
    for (const e of Object.values(STDERR)) expect(explainSbatchError(e)).not.toContain('\n');
  });
});

describe('squeue output', () => {
  it('one job: state, reason, node, time left; a finished job prints nothing', () => {
    expect(parseSqueueJob('RUNNING|None|vm|9:58\n')).toEqual({
      phase: 'running',
      state: 'RUNNING',
      reason: null,
      node: 'vm',
      timeLeftS: 598,
      neverStarts: null,
    });
    expect(parseSqueueJob('PENDING|Priority||1:00:00\n')).toMatchObject({
      phase: 'pending',
      reason: 'Priority',
      node: null,
      timeLeftS: 3600,
      neverStarts: null,
    });
    expect(parseSqueueJob('COMPLETING|None|vm|0:01\n')?.phase).toBe('ending');
    expect(parseSqueueJob('')).toBeNull();
  });

  it('PENDING (PartitionConfig) can never start, and says why', () => {
    const s = parseSqueueJob('PENDING|PartitionConfig||UNLIMITED\n')!;
    expect(s.timeLeftS).toBeNull();
    expect(s.neverStarts).toBe(
      'SLURM job can never start (PENDING, reason PartitionConfig): it asks for more than the partition offers (CPUs, nodes or GPUs per node): lower launcher.cpus/gpus/nodes or pick another partition',
    );
    expect(neverStartsReason('Resources')).toBeNull();
    expect(neverStartsReason('QOSMaxGRESPerJob')).toMatch(/lower launcher.gpus/);
  });

  it('queue position: rank in priority order among pending jobs', () => {
    const out = '17 4294901744 Resources\n19 4294901742 Priority\n18 4294901742 Priority\n';
    expect(parseQueuePosition(out, '19')).toEqual({ position: 2, pending: 3 });
    expect(parseQueuePosition(out, '17')).toEqual({ position: 1, pending: 3 });
    expect(parseQueuePosition(out, '99')).toBeNull();
  });

  it('durations and times', () => {
    expect(parseSlurmDuration('45')).toBe(45 * 60); // --time minutes
    expect(parseSlurmDuration('5:00')).toBe(300);
    expect(parseSlurmDuration('1:02:03')).toBe(3723);
    expect(parseSlurmDuration('2-03:04:05')).toBe(2 * 86400 + 3 * 3600 + 4 * 60 + 5);
    expect(parseSlurmDuration('UNLIMITED')).toBeNull();
    expect(parseSlurmDuration('INVALID')).toBeNull();
    expect(parseSlurmTime('2026-12-01T09:05:10')).toBe(new Date(2026, 11, 1, 9, 5, 10).getTime());
    expect(parseSlurmTime('N/A')).toBeNull();
  });
});

describe('sinfo GPUs', () => {
  it('free = total − used on nodes that take jobs; drained and down nodes count in the total only', () => {
    const out = [
      'alvis4-01|gpu:a40:4(S:0-1)|gpu:a40:1(IDX:0)|mix',
      'alvis4-02|gpu:a40:4(S:0-1)|gpu:a40:0(IDX:N/A)|idle',
      'alvis4-03|gpu:a40:4(S:0-1)|gpu:a40:0(IDX:N/A)|drain',
      'alvis4-01|gpu:a40:4(S:0-1)|gpu:a40:1(IDX:0)|mix',
      'cpu-01|(null)|gpu:0|idle',
    ].join('\n');
    expect(parseSinfoGpus(out)).toEqual({ free: 7, total: 12 });
    expect(parseSinfoGpus('vm|gpu:fake:2|gpu:fake:0(IDX:N/A)|idle\n')).toEqual({ free: 2, total: 2 });
    expect(parseSinfoGpus('cpu-01|(null)|(null)|idle\n')).toBeNull();
    expect(countGpus('gpu:a40:4(S:0-1),gpu:t4:2')).toBe(6);
    expect(countGpus('gpu:2')).toBe(2);
  });
});

describe('a controller that does not answer', () => {
  const r = (o: Partial<CommandResult>): CommandResult => ({
    rc: 1,
    stdout: '',
    stderr: '',
    timedOut: false,
    missing: false,
    ms: 1,
    ...o,
  });
  it('timeouts, refused connections and missing binaries each say so', () => {
    expect(describeFailure('SLURM', 'squeue', r({ rc: null, timedOut: true }), 20_000)).toBe(
      'squeue did not answer within 20 s: the SLURM controller is unreachable or overloaded — check that it runs (e.g. `scontrol ping`)',
    );
    expect(
      describeFailure(
        'SLURM',
        'sbatch',
        r({
          stderr: 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n',
        }),
        1,
      ),
    ).toMatch(/^sbatch cannot reach the SLURM controller/);
    expect(describeFailure('SLURM', 'sbatch', r({ missing: true, stderr: 'sbatch: command not found' }), 1)).toBe(
      'sbatch not found: run the worker on a SLURM login node (or set launcher.bin_dir)',
    );
  });
});
