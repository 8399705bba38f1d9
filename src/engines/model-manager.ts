import { EventEmitter } from 'node:events';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { concurrencyOf, type ModelConfig } from '../config/models.js';
import type { Logger } from '../log/logger.js';
import { abortable, anySignal, delay, SerialQueue } from './async-utils.js';
import { EngineClient } from './client.js';
import { buildEngineCommand } from './commands.js';
import { EngineProcess, type EngineExit } from './engine-process.js';
import { formatTail, restartLimitError, shutdownError, unknownModelError, type EngineError } from './errors.js';
import { selectEvictions } from './eviction.js';
import { allocatePort } from './net.js';
import { clearEngineRecord, recordEngine } from './orphans.js';
import { infoOf, logFileFor, newSlot, type Slot } from './slot.js';
import * as policy from './restart-policy.js';
import type { EngineHandle, EngineInfo, EngineLease, EngineState, SwapEvent } from './types.js';

export { logFileFor } from './slot.js';
export type { EngineHandle, EngineInfo, EngineLease, EngineState, SwapEvent } from './types.js';

export interface ModelManagerOptions {
  models: readonly ModelConfig[];
  /** Engine logs go to `<logDir>/<model id, filename-safe>.log`. */
  logDir: string;
  log: Logger;
  /** Engines loaded at once. @defaultValue 1 (one model on the GPU at a time) */
  maxLoaded?: number;
  /** SIGTERM → SIGKILL grace. @defaultValue 10_000 */
  stopTimeoutMs?: number;
  /** First restart backoff; doubles per recent failure, capped at 30 s. @defaultValue 1_000 */
  restartBackoffMs?: number;
  /** Restarts within 10 min before the engine stays failed (ENGINE_RESTART_LIMIT). @defaultValue 5 */
  maxRestarts?: number;
  /** Uptime after which earlier failures are forgiven. @defaultValue 60_000 */
  stableUptimeMs?: number;
  /** Rotate engine logs past this size. @defaultValue 10 MiB */
  maxLogBytes?: number;
  /** Interface engines listen on. @defaultValue '127.0.0.1' (vLLM's dev endpoints must not be exposed by default) */
  bindHost?: string;
}

/**
 * Starts, stops and swaps engine processes. Knows nothing of queues: callers ask for a model
 * with ensureReady()/lease() and mark requests with acquire().
 *
 * Invariants:
 * - Every start, stop and swap runs as a task on ONE SerialQueue per manager. Decisions are
 *   made inside the task that acts on them, so no caller acts on a state it read earlier
 *   (llama-swap #946). Concurrent ensureReady calls for one model queue up; the first starts
 *   it, the rest find it ready: one start, one pid.
 * - An engine is never stopped for a swap while it has requests in flight: the swap task
 *   waits for inFlight to reach 0. Tasks queued behind it (other models too) wait with it.
 * - The only write outside the queue is ready → failed on an unexpected exit, for the engine's
 *   current process only; queued tasks see it and restart the engine after backoff.
 */
export class ModelManager extends EventEmitter<{ state: [EngineInfo]; swap: [SwapEvent] }> {
  private readonly slots = new Map<string, Slot>();
  private readonly queue = new SerialQueue();
  private readonly closing = new AbortController();
  private readonly log: Logger;
  private readonly restart: policy.RestartPolicy;
  private shutdownPromise: Promise<void> | undefined;

  constructor(private readonly opts: ModelManagerOptions) {
    super();
    this.log = opts.log.child({ component: 'model-manager' });
    this.restart = {
      ...policy.defaultRestartPolicy,
      ...(opts.maxRestarts !== undefined && { maxRestarts: opts.maxRestarts }),
      ...(opts.restartBackoffMs !== undefined && { baseBackoffMs: opts.restartBackoffMs }),
      ...(opts.stableUptimeMs !== undefined && { stableUptimeMs: opts.stableUptimeMs }),
    };
    for (const config of opts.models) this.slots.set(config.id, newSlot(config, logFileFor(opts.logDir, config.id)));
  }

  /** Resolves when `modelId`'s engine is ready, starting or swapping it in if needed. */
  ensureReady(modelId: string, signal?: AbortSignal): Promise<EngineHandle> {
    return this.enqueueReady(modelId, signal, false);
  }

  /**
   * ensureReady + acquire in one step, inside the manager's loop: no swap can come between
   * the engine being ready and the request being counted. Prefer it to ensureReady().
   */
  async lease(modelId: string, signal?: AbortSignal): Promise<EngineLease> {
    return this.enqueueReady(modelId, signal, true) as Promise<EngineLease>;
  }

  /**
   * Marks one request in flight on `modelId`'s engine; returns its idempotent release.
   * Call it in the same tick ensureReady resolves (a pending swap yields one macrotask for this).
   */
  acquire(modelId: string): () => void {
    const slot = this.slotOf(modelId);
    slot.inFlight++;
    slot.lastUsed = Date.now();
    clearTimeout(slot.idleTimer);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      slot.inFlight--;
      slot.lastUsed = Date.now();
      if (slot.inFlight > 0) return;
      for (const wake of slot.drainWaiters) wake();
      this.armIdleTimer(slot);
    };
  }

  inFlight(modelId: string): number {
    return this.slotOf(modelId).inFlight;
  }

  info(modelId: string): EngineInfo {
    return infoOf(this.slotOf(modelId));
  }

  list(): EngineInfo[] {
    return [...this.slots.values()].map(infoOf);
  }

  /**
   * Stops `modelId`'s engine without waiting for its requests (they fail, retryably), and
   * clears its crash history: an operator's stop is also how a 'failed' engine is reset.
   */
  stop(modelId: string): Promise<void> {
    const slot = this.slotOf(modelId);
    return this.queue.run(async () => {
      if (this.closing.signal.aborted) return;
      await this.stopSlot(slot);
      slot.failures = [];
    });
  }

  /** Stops every engine group; ensureReady rejects with ENGINE_SHUTDOWN from now on. Idempotent. */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= this.doShutdown();
    return this.shutdownPromise;
  }

  private enqueueReady(modelId: string, signal: AbortSignal | undefined, take: boolean): Promise<EngineHandle> {
    if (this.closing.signal.aborted) return Promise.reject(shutdownError(modelId));
    let slot: Slot;
    try {
      slot = this.slotOf(modelId);
      signal?.throwIfAborted();
    } catch (err) {
      return Promise.reject(err);
    }
    const work = this.queue.run(() => this.readyTask(slot, signal, take));
    // A lease whose caller aborted after the task took its slot gives the slot back.
    return abortable(work, signal, (h) => (h as Partial<EngineLease>).release?.());
  }

  private async readyTask(slot: Slot, signal: AbortSignal | undefined, take: boolean): Promise<EngineHandle | EngineLease> {
    signal?.throwIfAborted(); // the caller left while queued: do no work for it
    if (this.closing.signal.aborted) throw shutdownError(slot.config.id);
    // 'ready' with a dead process: the exit is still being reported; count it as the crash it is.
    if (slot.state === 'ready' && !slot.proc?.isRunning) this.markFailed(slot, `engine for model ${slot.config.id} exited unexpectedly — see the engine log at ${slot.logFile}`);
    if (slot.state !== 'ready' || !slot.handle) await this.bringUp(slot, signal);
    const handle = slot.handle!;
    return take ? { ...handle, release: this.acquire(slot.config.id) } : handle;
  }

  /** Restart checks, eviction (after draining), start; emits 'swap'. Runs inside the queue. */
  private async bringUp(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    const wait = anySignal(signal, this.closing.signal);
    const isRestart = slot.state === 'failed';
    if (isRestart) await this.awaitRestartAllowed(slot, wait);
    const t0 = Date.now();
    const victims = selectEvictions(slot.config.id, this.list().map((i) => ({ ...i, lastUsed: this.slots.get(i.model)!.lastUsed })), this.opts.maxLoaded ?? 1);
    for (const id of victims) {
      const victim = this.slots.get(id)!;
      await this.drain(victim, wait);
      await this.stopSlot(victim);
    }
    if (isRestart) slot.restarts++;
    await this.startSlot(slot);
    const swap: SwapEvent = { from: victims[0] ?? null, to: slot.config.id, reason: victims.length ? 'lru-evict' : isRestart ? 'restart' : 'cold-start', ms: Date.now() - t0 };
    this.log.info({ ...swap, stopped: victims, readyMs: slot.readyMs }, 'engine swap');
    this.emit('swap', swap);
  }

  private async awaitRestartAllowed(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    const now = Date.now();
    if (policy.isRestartLimitReached(slot.failures, now, this.restart)) {
      const n = policy.recentFailures(slot.failures, now, this.restart).length;
      throw restartLimitError(slot.config.id, n, this.restart.windowMs, slot.lastError, slot.logFile);
    }
    await delay(policy.backoffRemainingMs(slot.failures, now, this.restart), signal);
  }

  /**
   * Waits until `slot` has no request in flight. The first yield is a macrotask so that
   * callers whose ensureReady just resolved run their acquire() before we look.
   */
  private async drain(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    await nextMacrotask();
    if (slot.inFlight > 0) this.log.info({ model: slot.config.id, inFlight: slot.inFlight }, 'waiting for requests to finish before swap');
    while (slot.inFlight > 0) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          slot.drainWaiters.delete(done);
          signal?.removeEventListener('abort', done);
          if (signal?.aborted) reject(signal.reason);
          else resolve();
        };
        slot.drainWaiters.add(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  private async startSlot(slot: Slot): Promise<void> {
    const model = slot.config;
    await this.discardProcess(slot);
    const port = await allocatePort();
    // Checked after the last await before spawning: shutdown() either sees slot.proc or we see it closing.
    if (this.closing.signal.aborted) throw shutdownError(model.id);
    const proc = new EngineProcess({
      model: model.id,
      command: buildEngineCommand(model, port, this.opts.bindHost),
      port,
      logFile: slot.logFile,
      log: this.opts.log,
      startupTimeoutMs: model.startup_timeout_s * 1000,
      ...(this.opts.stopTimeoutMs !== undefined && { stopTimeoutMs: this.opts.stopTimeoutMs }),
      ...(this.opts.maxLogBytes !== undefined && { maxLogBytes: this.opts.maxLogBytes }),
    });
    proc.on('exit', (e) => this.onUnexpectedExit(slot, proc, e));
    slot.proc = proc;
    slot.handle = undefined;
    const promise = proc.start();
    if (proc.pid !== undefined) recordEngine(slot.logFile, model.id, proc.pid);
    this.setState(slot, 'starting');
    try {
      slot.readyMs = await promise;
    } catch (err) {
      if (this.closing.signal.aborted) throw shutdownError(model.id);
      this.markFailed(slot, (err as Error).message);
      this.log.warn({ model: model.id, code: (err as EngineError).code, logFile: slot.logFile }, 'engine start failed');
      throw err;
    }
    const concurrency = concurrencyOf(model);
    slot.handle = { model: model.id, baseUrl: proc.baseUrl, client: new EngineClient(proc.baseUrl, { model: model.id, connections: concurrency }), concurrency };
    slot.readyAt = slot.lastUsed = Date.now();
    this.setState(slot, 'ready');
    this.log.info({ model: model.id, enginePid: proc.pid, readyMs: slot.readyMs }, 'engine ready');
    this.armIdleTimer(slot);
  }

  /** Stops the slot's process (any state) and closes its client. Runs inside the queue or shutdown. */
  private async stopSlot(slot: Slot): Promise<void> {
    clearTimeout(slot.idleTimer);
    const { proc, handle } = slot;
    slot.handle = undefined;
    if (proc) {
      if (proc.isRunning) this.setState(slot, 'stopping');
      await proc.stop();
      clearEngineRecord(slot.logFile, proc.pid);
      slot.proc = undefined;
    }
    await handle?.client.destroy();
    if (slot.state !== 'stopped') this.setState(slot, 'stopped');
  }

  /** Cleans up what a failed engine left (its client, a group that may linger) without a state change. */
  private async discardProcess(slot: Slot): Promise<void> {
    const { proc, handle } = slot;
    slot.proc = undefined;
    slot.handle = undefined;
    await handle?.client.destroy();
    await proc?.stop();
    if (proc) clearEngineRecord(slot.logFile, proc.pid);
  }

  private onUnexpectedExit(slot: Slot, proc: EngineProcess, e: EngineExit): void {
    // Only ready → failed, and only for the current process: a stale or already-counted exit is ignored.
    if (slot.proc !== proc || slot.state !== 'ready' || this.closing.signal.aborted) return;
    const how = e.reason === 'unhealthy' ? 'stopped answering health checks and was killed' : e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
    const msg = `engine for model ${slot.config.id} ${how}; last output: ${formatTail(e.outputTail)} — see the engine log at ${slot.logFile}`;
    void slot.handle?.client.destroy(); // requests in flight fail now, classified 'retry'
    slot.handle = undefined;
    clearTimeout(slot.idleTimer);
    this.markFailed(slot, msg);
    this.log.warn({ model: slot.config.id, enginePid: proc.pid, code: e.code, signal: e.signal, reason: e.reason, logFile: slot.logFile }, 'engine exited unexpectedly');
  }

  private markFailed(slot: Slot, message: string): void {
    slot.failures = policy.recordFailure(slot.failures, Date.now(), slot.readyAt, this.restart);
    slot.readyAt = null;
    slot.lastError = message;
    this.setState(slot, 'failed');
  }

  /** Idle TTL: a ready engine with nothing in flight for idle_ttl_s is stopped (through the queue). */
  private armIdleTimer(slot: Slot): void {
    clearTimeout(slot.idleTimer);
    const ttlMs = slot.config.idle_ttl_s * 1000;
    if (ttlMs <= 0 || slot.state !== 'ready' || slot.inFlight > 0 || this.closing.signal.aborted) return;
    slot.idleTimer = setTimeout(() => {
      void this.queue
        .run(async () => {
          if (slot.state !== 'ready' || slot.inFlight > 0) return;
          if (Date.now() - slot.lastUsed < ttlMs) return this.armIdleTimer(slot);
          this.log.info({ model: slot.config.id, idleTtlS: slot.config.idle_ttl_s }, 'engine idle, stopping');
          await this.stopSlot(slot);
        })
        .catch((err) => this.log.warn({ err, model: slot.config.id }, 'idle stop failed'));
    }, Math.max(0, slot.lastUsed + ttlMs - Date.now()));
    slot.idleTimer.unref();
  }

  /**
   * Aborting `closing` first wakes every queued wait (drain, backoff); then every process
   * group is stopped in parallel, which also ends any start in progress. Only then do the
   * queued tasks settle, and every engine ends in 'shutdown'.
   */
  private async doShutdown(): Promise<void> {
    this.closing.abort(shutdownError());
    const slots = [...this.slots.values()];
    await Promise.all(slots.map((s) => this.stopSlot(s).catch((err) => this.log.warn({ err, model: s.config.id }, 'engine stop failed'))));
    await this.queue.idle();
    for (const s of slots) this.setState(s, 'shutdown');
    this.log.info({ engines: slots.length }, 'engines shut down');
  }

  private setState(slot: Slot, state: EngineState): void {
    slot.state = state;
    slot.since = Date.now();
    this.emit('state', infoOf(slot));
  }

  private slotOf(modelId: string): Slot {
    const slot = this.slots.get(modelId);
    if (!slot) throw unknownModelError(modelId, [...this.slots.keys()]);
    return slot;
  }
}
