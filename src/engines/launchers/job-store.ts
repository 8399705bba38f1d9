import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** What is kept of a model's batch job under the state dir, so a restarted worker reconnects to it. */
export interface JobRecord {
  model: string;
  launcher: 'slurm' | 'pbs';
  jobId: string;
  /** Hash of the job script: a changed config submits a new job instead of reconnecting. */
  scriptHash: string;
  submittedAt: number;
  outputFile: string;
  endpointFile: string;
}

function writeJson(file: string, value: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 2));
  renameSync(tmp, file);
}

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

export function recordFile(dir: string, safeModel: string): string {
  return path.join(dir, `${safeModel}.job.json`);
}

export function saveRecord(file: string, r: JobRecord): void {
  writeJson(file, r);
}

export function loadRecord(file: string): JobRecord | null {
  const r = readJson<JobRecord>(file);
  return r && typeof r.jobId === 'string' ? r : null;
}

export function clearRecord(file: string): void {
  rmSync(file, { force: true });
}

/**
 * Queue waits of earlier jobs, by job shape (`partition|gpus|cpus|mem|nodes|time`): when the
 * batch system gives no start estimate, the median of the last waits of the same shape is one.
 */
export class WaitHistory {
  private static readonly KEEP = 20;
  constructor(private readonly file: string) {}

  record(shape: string, waitMs: number, at = Date.now()): void {
    const all = readJson<Record<string, { waitMs: number; at: number }[]>>(this.file) ?? {};
    const list = [...(all[shape] ?? []), { waitMs: Math.max(0, Math.round(waitMs)), at }].slice(-WaitHistory.KEEP);
    all[shape] = list;
    writeJson(this.file, all);
  }

  /** Median wait (ms) of the recorded jobs of this shape, and how many there were; null when none. */
  estimate(shape: string): { waitMs: number; samples: number } | null {
    const list = readJson<Record<string, { waitMs: number }[]>>(this.file)?.[shape] ?? [];
    if (list.length === 0) return null;
    const sorted = list.map((x) => x.waitMs).sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    const waitMs = sorted.length % 2 ? sorted[mid]! : Math.round((sorted[mid - 1]! + sorted[mid]!) / 2);
    return { waitMs, samples: sorted.length };
  }
}
