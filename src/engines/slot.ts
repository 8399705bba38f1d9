import { createHash } from 'node:crypto';
import path from 'node:path';
import type { ModelConfig } from '../config/models.js';
import type { EngineDetail, EngineInstance } from './launchers/types.js';
import { safeFileName } from './output-log.js';
import type { EngineHandle, EngineInfo, EngineState } from './types.js';

/** The ModelManager's record of one model's engine. Written only by the manager (see its invariants). */
export interface Slot {
  config: ModelConfig;
  logFile: string;
  state: EngineState;
  since: number;
  proc: EngineInstance | undefined;
  /** What a launched engine (a batch job) last reported: kept after it fails, so the reason stays visible. */
  detail: EngineDetail | null;
  handle: EngineHandle | undefined;
  inFlight: number;
  lastUsed: number;
  restarts: number;
  failures: number[];
  lastError: string | null;
  readyMs: number | null;
  readyAt: number | null;
  drainWaiters: Set<() => void>;
  idleTimer: NodeJS.Timeout | undefined;
}

export function newSlot(config: ModelConfig, logFile: string): Slot {
  return {
    config,
    logFile,
    state: 'stopped',
    since: Date.now(),
    proc: undefined,
    detail: null,
    handle: undefined,
    inFlight: 0,
    lastUsed: 0,
    restarts: 0,
    failures: [],
    lastError: null,
    readyMs: null,
    readyAt: null,
    drainWaiters: new Set(),
    idleTimer: undefined,
  };
}

/** `<logDir>/<safe id>.log`; a short hash keeps ids that sanitise alike (`a/b`, `a_b`) apart. */
export function logFileFor(logDir: string, modelId: string): string {
  const safe = safeFileName(modelId);
  const suffix = safe === modelId ? '' : `-${createHash('sha256').update(modelId).digest('hex').slice(0, 8)}`;
  return path.join(logDir, `${safe}${suffix}.log`);
}

export function infoOf(s: Slot): EngineInfo {
  const running = s.proc?.isRunning === true;
  return {
    model: s.config.id,
    engine: s.config.engine,
    state: s.state,
    pid: running ? (s.proc!.pid ?? null) : null,
    baseUrl: running ? s.proc!.baseUrl || null : null,
    since: s.since,
    restarts: s.restarts,
    lastError: s.lastError,
    logFile: s.logFile,
    readyMs: s.readyMs,
    detail: s.proc?.detail?.() ?? s.detail,
  };
}
