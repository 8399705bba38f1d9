import { EventEmitter } from 'node:events';
import path from 'node:path';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { concurrencyOf, launcherOf, type LauncherConfig, type ModelConfig } from '../config/models.js';
import type { Logger } from '../log/logger.js';
import { abortable, anySignal, delay, SerialQueue } from './async-utils.js';
import { EngineClient } from './client.js';
import { buildEngineCommand } from './commands.js';
import { EngineProcess, type EngineExit } from './engine-process.js';
import { BatchJobEngine, schedulerFor, type EngineInstance } from './launchers/index.js';
import type { CommandRunner } from './launchers/runner.js';
import { formatTail, restartLimitError, shutdownError, unknownModelError, type EngineError } from './errors.js';
import { selectEvictions } from './eviction.js';
import { queryGpus, type GpuQuery } from './gpu.js';
import { allocatePort } from './net.js';
import { clearEngineRecord, recordEngine } from './orphans.js';
import { infoOf, logFileFor, newSlot, type Slot } from './slot.js';
import * as policy from './restart-policy.js';
import type { EngineHandle, EngineInfo, EngineLease, EngineState, SwapEvent } from './types.js';
import { defaultHostRamBudgetMiB, sleepModeOf, VllmSupport } from './vllm.js';

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
  /** CUDA_VISIBLE_DEVICES for the engines (WORKER_GPUS); a model's options.env wins. @defaultValue the worker's own */
  workerGpus?: string;
  /** nvidia-smi for vLLM's free-GPU-memory check (tests point it at a fake script). @defaultValue 'nvidia-smi' */
  nvidiaSmi?: string;
  /** Reads the GPUs with that nvidia-smi. @defaultValue queryGpus of gpu.ts */
  queryGpus?: (nvidiaSmi: string) => Promise<GpuQuery>;
  /** Longest wait for a vLLM engine's GPU memory to be free before ENGINE_GPU_MEMORY. @defaultValue 60_000 */
  gpuMemoryWaitMs?: number;
  /** nvidia-smi poll interval during that wait. @defaultValue 1_000 */
  gpuMemoryPollMs?: number;
  /** Host RAM (MiB) vLLM engines sleeping at level 1 may hold together (HOST_RAM_BUDGET_MB). @defaultValue half of os.totalmem() */
  hostRamBudgetMb?: number;
  /** Engines launched as SLURM/PBS jobs keep their job scripts, outputs and job ids here. @defaultValue `<logDir>/../launchers` */
  launcherStateDir?: string;
  /** Runs sbatch/squeue/qsub… for launched engines (tests record or fake them). @defaultValue the real commands */
  schedulerRunner?: CommandRunner;
  /** Health-check interval of ready engines launched as jobs. @defaultValue 5_000 */
  jobHealthIntervalMs?: number;
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
  /** vLLM's version gate, GPU memory check, real concurrency and sleep mode (vllm.ts). */
  private readonly vllm: VllmSupport;
  private shutdownPromise: Promise<void> | undefined;
  /** Replacement jobs still starting (launched engines near their time limit): shutdown cancels them too. */
  private readonly replacements = new Set<BatchJobEngine>();

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
    this.vllm = new VllmSupport({
      log: this.log,
      nvidiaSmi: opts.nvidiaSmi ?? 'nvidia-smi',
      queryGpus: opts.queryGpus ?? ((cmd) => queryGpus(cmd)),
      gpuMemoryWaitMs: opts.gpuMemoryWaitMs ?? 60_000,
      gpuMemoryPollMs: opts.gpuMemoryPollMs ?? 1_000,
      hostRamBudgetMiB: opts.hostRamBudgetMb ?? defaultHostRamBudgetMiB(),
      engines: () => this.list(),
    });
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

  private async readyTask(
    slot: Slot,
    signal: AbortSignal | undefined,
    take: boolean,
  ): Promise<EngineHandle | EngineLease> {
    signal?.throwIfAborted(); // the caller left while queued: do no work for it
    if (this.closing.signal.aborted) throw shutdownError(slot.config.id);
    // 'ready' with a dead process: the exit is still being reported; count it as the crash it is.
    if (slot.state === 'ready' && !slot.proc?.isRunning)
      this.markFailed(
        slot,
        `engine for model ${slot.config.id} exited unexpectedly — see the engine log at ${slot.logFile}`,
      );
    if (slot.state !== 'ready' || !slot.handle) await this.bringUp(slot, signal);
    const handle = slot.handle!;
    return take ? { ...handle, release: this.acquire(slot.config.id) } : handle;
  }

  /** Restart checks, eviction (after draining), start; emits 'swap'. Runs inside the queue. */
  private async bringUp(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    const wait = anySignal(signal, this.closing.signal);
    const isRestart = slot.state === 'failed';
    const waking = slot.state === 'sleeping';
    if (isRestart) await this.awaitRestartAllowed(slot, wait);
    const t0 = Date.now();
    const victims = selectEvictions(
      slot.config.id,
      this.list().map((i) => ({ ...i, lastUsed: this.slots.get(i.model)!.lastUsed })),
      this.opts.maxLoaded ?? 1,
    );
    for (const id of victims) {
      const victim = this.slots.get(id)!;
      await this.drain(victim, wait);
      await this.evictSlot(victim);
    }
    if (isRestart) slot.restarts++;
    if (waking) await this.wakeSlot(slot, wait);
    else await this.startSlot(slot, wait);
    const swap: SwapEvent = {
      from: victims[0] ?? null,
      to: slot.config.id,
      reason: victims.length ? 'lru-evict' : waking ? 'wake' : isRestart ? 'restart' : 'cold-start',
      ms: Date.now() - t0,
    };
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
    if (slot.inFlight > 0)
      this.log.info({ model: slot.config.id, inFlight: slot.inFlight }, 'waiting for requests to finish before swap');
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

  private async startSlot(slot: Slot, signal?: AbortSignal): Promise<void> {
    const model = slot.config;
    await this.discardProcess(slot);
    const launcher = launcherOf(model);
    // A launched engine's GPUs are the job's: the local version and GPU-memory checks do not apply.
    if (model.engine === 'vllm' && !launcher) await this.vllmPreStart(slot, signal);
    const proc = launcher ? this.newJobEngine(slot, launcher) : await this.newLocalProcess(slot);
    // Checked after the last await before starting: shutdown() either sees slot.proc or we see it closing.
    if (this.closing.signal.aborted) throw shutdownError(model.id);
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
    // vLLM: the KV cache, not max_num_seqs, bounds what runs at once (read from its log or /metrics).
    const { concurrency, source } =
      model.engine === 'vllm'
        ? await this.vllm.readConcurrency(model, proc, concurrencyOf(model))
        : { concurrency: concurrencyOf(model), source: 'config' };
    slot.handle = {
      model: model.id,
      baseUrl: proc.baseUrl,
      client: new EngineClient(proc.baseUrl, { model: model.id, connections: concurrency }),
      concurrency,
    };
    slot.readyAt = slot.lastUsed = Date.now();
    this.setState(slot, 'ready');
    this.log.info(
      { model: model.id, enginePid: proc.pid, readyMs: slot.readyMs, concurrency, concurrencySource: source },
      'engine ready',
    );
    this.armIdleTimer(slot);
  }

  /** Today's path: the engine as a child process of this worker, on a port allocated here. */
  private async newLocalProcess(slot: Slot): Promise<EngineProcess> {
    const model = slot.config;
    const port = await allocatePort();
    const command = buildEngineCommand(model, port, this.opts.bindHost);
    const gpus = this.cudaDevicesOf(model);
    if (gpus !== undefined) command.env['CUDA_VISIBLE_DEVICES'] = gpus;
    return new EngineProcess({
      model: model.id,
      command,
      port,
      logFile: slot.logFile,
      log: this.opts.log,
      startupTimeoutMs: model.startup_timeout_s * 1000,
      ...(this.opts.stopTimeoutMs !== undefined && { stopTimeoutMs: this.opts.stopTimeoutMs }),
      ...(this.opts.maxLogBytes !== undefined && { maxLogBytes: this.opts.maxLogBytes }),
    });
  }

  /**
   * The engine as a SLURM/PBS job (launchers/batch-job.ts). Its detail (queue position, start
   * estimate, …) is published as a state event; near its time limit it is replaced.
   */
  private newJobEngine(slot: Slot, launcher: LauncherConfig, fresh = false): BatchJobEngine {
    const model = slot.config;
    const inst = new BatchJobEngine({
      model,
      launcher,
      scheduler: schedulerFor(launcher, this.opts.schedulerRunner),
      logFile: slot.logFile,
      log: this.opts.log,
      stateDir: this.opts.launcherStateDir ?? path.join(path.dirname(this.opts.logDir), 'launchers'),
      startupTimeoutMs: model.startup_timeout_s * 1000,
      fresh,
      ...(this.opts.maxLogBytes !== undefined && { maxLogBytes: this.opts.maxLogBytes }),
      ...(this.opts.jobHealthIntervalMs !== undefined && { healthIntervalMs: this.opts.jobHealthIntervalMs }),
    });
    inst.on('detail', (d) => {
      if (slot.proc !== inst && slot.proc !== undefined) return; // a replacement's progress is logged, not shown
      slot.detail = d;
      this.emit('state', infoOf(slot));
    });
    if (!fresh) slot.detail = inst.detail();
    inst.on('expiring', () => void this.replaceJob(slot, inst, launcher));
    return inst;
  }

  /**
   * A job near its time limit: submit a replacement, and once it is ready move the model to it
   * (new requests go to the new engine), then give requests still on the old one a grace period
   * and cancel the old job. Requests cut off by the cancel fail retryably and are sent again.
   * If the replacement cannot start, the old job runs out and the engine restarts as after a crash.
   */
  private async replaceJob(slot: Slot, old: BatchJobEngine, launcher: LauncherConfig): Promise<void> {
    if (slot.proc !== old || slot.state !== 'ready' || this.closing.signal.aborted) return;
    const model = slot.config;
    const next = this.newJobEngine(slot, launcher, true);
    const t0 = Date.now();
    this.log.info({ model: model.id, oldJob: old.job }, 'starting a replacement job before the time limit');
    let readyMs: number;
    this.replacements.add(next);
    try {
      readyMs = await next.start();
    } catch (err) {
      this.log.warn(
        { model: model.id, err: (err as Error).message },
        'replacement job failed to start; the old job runs until its time limit',
      );
      return;
    } finally {
      this.replacements.delete(next);
    }
    await this.queue.run(async () => {
      if (slot.proc !== old || slot.state !== 'ready' || this.closing.signal.aborted || !next.isRunning) {
        await next.stop();
        return;
      }
      const concurrency = slot.handle?.concurrency ?? concurrencyOf(model);
      const oldHandle = slot.handle;
      next.on('exit', (e) => this.onUnexpectedExit(slot, next, e));
      slot.proc = next;
      slot.readyMs = readyMs;
      slot.detail = next.detail();
      slot.handle = {
        model: model.id,
        baseUrl: next.baseUrl,
        client: new EngineClient(next.baseUrl, { model: model.id, connections: concurrency }),
        concurrency,
      };
      this.setState(slot, 'ready');
      this.log.info(
        { model: model.id, oldJob: old.job, newJob: next.job, ms: Date.now() - t0 },
        'moved to the replacement job',
      );
      const st = old.detail();
      const graceMs = Math.max(0, Math.min(60_000, ((st.timeLeftS ?? 60) - 15) * 1000));
      void delay(graceMs, this.closing.signal)
        .catch(() => undefined)
        .then(async () => {
          await oldHandle?.client.destroy();
          await old.stop();
        });
    });
  }

  /** CUDA_VISIBLE_DEVICES of `model`'s engine: its options.env, else WORKER_GPUS, else the worker's own. */
  private cudaDevicesOf(model: ModelConfig): string | undefined {
    return model.options.env['CUDA_VISIBLE_DEVICES'] ?? this.opts.workerGpus ?? process.env['CUDA_VISIBLE_DEVICES'];
  }

  /**
   * vLLM before a cold start: version gate, then a bounded wait for free GPU memory (stopping
   * our sleeping engines first if they are in the way). A refusal counts as a failed start.
   */
  private async vllmPreStart(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    const model = slot.config;
    const ctx = {
      cudaVisibleDevices: this.cudaDevicesOf(model),
      signal: anySignal(signal, this.closing.signal),
      releaseSleeping: () => this.stopOneSleeping(slot),
    };
    if (sleepModeOf(model) !== 'off' && (this.opts.bindHost ?? '127.0.0.1') !== '127.0.0.1') {
      this.log.warn(
        { model: model.id, bindHost: this.opts.bindHost },
        'sleep mode opens unauthenticated dev endpoints: this engine listens on 127.0.0.1 only, not on ENGINE_BIND_HOST',
      );
    }
    try {
      await this.vllm.beforeStart(model, { ...process.env, ...model.options.env }, ctx);
    } catch (err) {
      if (this.closing.signal.aborted) throw shutdownError(model.id);
      if (signal?.aborted) throw err; // the caller left: no failure of the engine
      this.markFailed(slot, (err as Error).message);
      this.log.warn(
        { model: model.id, code: (err as EngineError).code, err: (err as Error).message },
        'engine start refused',
      );
      throw err;
    }
  }

  /**
   * Eviction of a drained engine: a vLLM engine with sleep_mode goes to sleep (its process
   * stays, state 'sleeping'); anything else, or a sleep that fails, is stopped as before.
   */
  private async evictSlot(slot: Slot): Promise<void> {
    const { proc, handle } = slot;
    if (
      sleepModeOf(slot.config) !== 'off' &&
      !launcherOf(slot.config) &&
      slot.state === 'ready' &&
      proc?.isRunning &&
      handle
    ) {
      clearTimeout(slot.idleTimer);
      try {
        const sleeping = [...this.slots.values()].filter((s) => s.state === 'sleeping').map((s) => s.config.id);
        await this.vllm.sleep(slot.config, proc.baseUrl, handle.concurrency, sleeping, this.cudaDevicesOf(slot.config));
        if (!proc.isRunning || slot.state !== 'ready') throw new Error('the engine exited while going to sleep');
        slot.handle = undefined;
        await handle.client.destroy();
        this.setState(slot, 'sleeping');
        this.armIdleTimer(slot); // idle_ttl_s still stops it in the end
        return;
      } catch (err) {
        this.log.warn(
          { model: slot.config.id, err: (err as Error).message },
          'engine sleep failed; stopping it instead',
        );
      }
    }
    await this.stopSlot(slot);
  }

  /** sleeping → starting → ready through POST /wake_up; a failed wake-up stops the engine and cold-starts it. */
  private async wakeSlot(slot: Slot, signal: AbortSignal | undefined): Promise<void> {
    const model = slot.config;
    const proc = slot.proc;
    clearTimeout(slot.idleTimer);
    this.setState(slot, 'starting');
    try {
      if (!proc?.isRunning) throw new Error('the sleeping engine has exited');
      // Only shutdown interrupts a wake-up (seconds): a caller that leaves does not put the engine in limbo.
      const ctx = {
        cudaVisibleDevices: this.cudaDevicesOf(model),
        signal: this.closing.signal,
        releaseSleeping: () => this.stopOneSleeping(slot),
      };
      const woke = await this.vllm.wake(model, proc.baseUrl, ctx);
      if (!proc.isRunning) throw new Error('the engine exited while waking up');
      slot.handle = {
        model: model.id,
        baseUrl: proc.baseUrl,
        client: new EngineClient(proc.baseUrl, { model: model.id, connections: woke.concurrency }),
        concurrency: woke.concurrency,
      };
      slot.lastUsed = Date.now();
      this.setState(slot, 'ready');
      this.log.info({ model: model.id, enginePid: proc.pid, wakeMs: woke.ms, level: woke.level }, 'engine woke up');
      this.armIdleTimer(slot);
    } catch (err) {
      if (this.closing.signal.aborted) throw shutdownError(model.id);
      await this.stopSlot(slot);
      this.log.warn({ model: model.id, err: (err as Error).message }, 'engine wake-up failed; restarting it');
      await this.startSlot(slot, signal);
    }
  }

  /** Stops our least recently used sleeping engine other than `except` (to free GPU memory); false if none. */
  private async stopOneSleeping(except: Slot): Promise<boolean> {
    const victim = [...this.slots.values()]
      .filter((s) => s !== except && s.state === 'sleeping')
      .sort((a, b) => a.lastUsed - b.lastUsed)[0];
    if (!victim) return false;
    this.log.info({ model: victim.config.id, for: except.config.id }, 'stopping a sleeping engine to free GPU memory');
    await this.stopSlot(victim);
    return true;
  }

  /**
   * Stops the slot's process (any state) and closes its client. Runs inside the queue or
   * shutdown. A launched job is cancelled, except at shutdown with `on_shutdown: keep`.
   */
  private async stopSlot(slot: Slot, shuttingDown = false): Promise<void> {
    clearTimeout(slot.idleTimer);
    const { proc, handle } = slot;
    slot.handle = undefined;
    if (proc) {
      if (proc.isRunning) this.setState(slot, 'stopping');
      await proc.stop({ release: !(shuttingDown && launcherOf(slot.config)?.on_shutdown === 'keep') });
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

  private onUnexpectedExit(slot: Slot, proc: EngineInstance, e: EngineExit): void {
    // Only ready/sleeping → failed, and only for the current process: a stale or already-counted exit is ignored.
    if (slot.proc !== proc || (slot.state !== 'ready' && slot.state !== 'sleeping') || this.closing.signal.aborted)
      return;
    const how =
      e.reason === 'unhealthy'
        ? 'stopped answering health checks and was killed'
        : e.signal
          ? `was killed by ${e.signal}`
          : `exited with code ${e.code}`;
    const msg = e.message
      ? `engine for model ${slot.config.id}: ${e.message}`
      : `engine for model ${slot.config.id} ${how}; last output: ${formatTail(e.outputTail)} — see the engine log at ${slot.logFile}`;
    void slot.handle?.client.destroy(); // requests in flight fail now, classified 'retry'
    slot.handle = undefined;
    clearTimeout(slot.idleTimer);
    this.markFailed(slot, msg);
    this.log.warn(
      {
        model: slot.config.id,
        enginePid: proc.pid,
        code: e.code,
        signal: e.signal,
        reason: e.reason,
        logFile: slot.logFile,
      },
      'engine exited unexpectedly',
    );
  }

  private markFailed(slot: Slot, message: string): void {
    slot.failures = policy.recordFailure(slot.failures, Date.now(), slot.readyAt, this.restart);
    slot.readyAt = null;
    slot.lastError = message;
    this.setState(slot, 'failed');
  }

  /** Idle TTL: a ready (or sleeping) engine with nothing in flight for idle_ttl_s is stopped (through the queue). */
  private armIdleTimer(slot: Slot): void {
    clearTimeout(slot.idleTimer);
    const ttlMs = slot.config.idle_ttl_s * 1000;
    const idleState = slot.state === 'ready' || slot.state === 'sleeping';
    if (ttlMs <= 0 || !idleState || slot.inFlight > 0 || this.closing.signal.aborted) return;
    slot.idleTimer = setTimeout(
      () => {
        void this.queue
          .run(async () => {
            if ((slot.state !== 'ready' && slot.state !== 'sleeping') || slot.inFlight > 0) return;
            if (Date.now() - slot.lastUsed < ttlMs) return this.armIdleTimer(slot);
            this.log.info({ model: slot.config.id, idleTtlS: slot.config.idle_ttl_s }, 'engine idle, stopping');
            await this.stopSlot(slot);
          })
          .catch((err) => this.log.warn({ err, model: slot.config.id }, 'idle stop failed'));
      },
      Math.max(0, slot.lastUsed + ttlMs - Date.now()),
    );
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
    await Promise.all([
      ...slots.map((s) =>
        this.stopSlot(s, true).catch((err) => this.log.warn({ err, model: s.config.id }, 'engine stop failed')),
      ),
      ...[...this.replacements].map((r) => r.stop().catch(() => undefined)),
    ]);
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
