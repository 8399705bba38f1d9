import type { EngineClient } from './client.js';
import type { EngineDetail } from './launchers/types.js';

export type { EngineDetail } from './launchers/types.js';

/**
 * Engine states as in llama-swap, plus `failed` (crashed; the next ensureReady restarts it) and
 * `sleeping` (a vLLM engine with sleep_mode, evicted: its process lives on with its weights in
 * host RAM or dropped; it is not routed to, counts as not loaded for eviction, and the next
 * ensureReady wakes it up instead of a cold start). A wake-up goes sleeping → starting → ready.
 */
export type EngineState = 'stopped' | 'starting' | 'ready' | 'sleeping' | 'stopping' | 'failed' | 'shutdown';

export interface EngineInfo {
  model: string;
  engine: 'sim' | 'vllm' | 'embedded' | 'llamacpp';
  state: EngineState;
  /** The running process (null when none runs). */
  pid: number | null;
  baseUrl: string | null;
  /** ms epoch of the last state change. */
  since: number;
  /** Starts made after a failure, over the manager's life. */
  restarts: number;
  lastError: string | null;
  logFile: string;
  /** Start-to-ready time of the last successful start. */
  readyMs: number | null;
  /** An engine launched as a SLURM/PBS job: its job state, queue position, start estimate… (`detail.text` is one line); null for local engines. */
  detail: EngineDetail | null;
}

/** What a caller needs to send requests to a ready engine. */
export interface EngineHandle {
  model: string;
  baseUrl: string;
  client: EngineClient;
  /**
   * Requests the engine runs at once: keep this many in flight. For vLLM, max_num_seqs capped
   * by what its KV cache holds (read from its start-up log or /metrics once it is ready).
   */
  concurrency: number;
}

/** A handle whose in-flight slot was taken inside the manager's loop (see ModelManager.lease). */
export interface EngineLease extends EngineHandle {
  /** Gives the in-flight slot back. Idempotent. */
  release: () => void;
}

export interface SwapEvent {
  /** The engine stopped to make room (the first, if several), or null. */
  from: string | null;
  to: string;
  /** 'cold-start' | 'restart' | 'wake' (from sleeping, nothing evicted) | 'lru-evict' */
  reason: string;
  /** From the decision to the target being ready, stop of the old engine included. */
  ms: number;
}
