import type { EventEmitter } from 'node:events';
import type { EngineExit } from '../engine-process.js';

/**
 * A running engine, whatever started it: a child of the worker (EngineProcess) or a job of a
 * batch system (BatchJobEngine). The ModelManager needs nothing else of it.
 */
export interface EngineInstance extends EventEmitter<EngineInstanceEvents> {
  readonly model: string;
  readonly baseUrl: string;
  readonly logFile: string;
  readonly pid: number | undefined;
  /** True from start until the engine is gone. */
  readonly isRunning: boolean;
  /** Resolves with the start-to-ready ms once /health answers 200; rejects with an EngineError. */
  start(): Promise<number>;
  /** Stops the engine. `release: false` (batch jobs only) leaves the job running for a later reconnect. */
  stop(opts?: { release?: boolean }): Promise<void>;
  outputTail(): string[];
  /** What the engine is doing, for operators (a batch job's state, queue position, estimate…), or null. */
  detail?(): EngineDetail | null;
}

export interface EngineInstanceEvents {
  /** An exit after ready that stop() did not ask for. */
  exit: [EngineExit];
  /** detail() changed. */
  detail: [EngineDetail];
  /** A batch job nears its time limit: the manager should start a replacement (once per instance). */
  expiring: [{ timeLeftS: number }];
}

/** A batch job as operators see it (`detail` in heartbeats, /v1/models, /ops/engines). */
export interface EngineDetail {
  /** One line: `SLURM job 123 PENDING (Priority): position 2 of 3, …`. */
  text: string;
  launcher: 'slurm' | 'pbs';
  jobId: string | null;
  /** The batch system's own state word (PENDING, RUNNING, Q, R…). */
  jobState: string | null;
  reason: string | null;
  node: string | null;
  /** Rank among pending jobs (1 = next), and how many are pending. */
  queuePosition: number | null;
  queueLength: number | null;
  /** ms epoch; `estimateSource` says whose estimate it is. */
  estimatedStart: number | null;
  estimateSource: 'scheduler' | 'history' | null;
  gpusFree: number | null;
  gpusTotal: number | null;
  monitorUrl: string | null;
  /** Seconds left of the time limit while running. */
  timeLeftS: number | null;
}
