import type { Dispatcher } from 'undici';

/**
 * What the inference proxy needs from the engine router (src/control/engine-router.ts
 * satisfies it structurally; kept here so the proxy depends on nothing else of it).
 */
export interface EngineTarget {
  /** e.g. http://127.0.0.1:41234 */
  baseUrl: string;
  model: string;
  workerId: string;
  /** A keep-alive undici Pool for baseUrl, shared. */
  dispatcher: Dispatcher;
  /** Call exactly once when the upstream request is finished/aborted (idempotent). */
  release(): void;
}

export interface EngineRouter {
  isKnownModel(model: string): boolean;
  /** Waits for a ready engine of `model` (asking a worker to load it); rejects with ApiError (503 + Retry-After) on timeout, or signal.reason if aborted. */
  acquire(model: string, signal: AbortSignal): Promise<EngineTarget>;
  /** The upstream refused the connection / reset: skip this engine until the worker reports it again. */
  reportFailure(target: EngineTarget): void;
}
