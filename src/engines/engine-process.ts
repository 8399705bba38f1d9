import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log/logger.js';
import { ENGINE_HOST } from './commands.js';
import type { EngineCommand } from './engine-command.js';
import { EngineError, healthTimeoutError, startFailedError } from './errors.js';
import { checkHealth, waitPortClosed } from './net.js';
import { LineRing, RotatingLogFile } from './output-log.js';

export interface EngineProcessOptions {
  model: string;
  command: EngineCommand;
  /** Port the manager allocated (see allocatePort). */
  port: number;
  logFile: string;
  log: Logger;
  /** Give up on a start that is not healthy in this time (kills the group). */
  startupTimeoutMs: number;
  /** SIGTERM → this long → SIGKILL. @defaultValue 10_000 */
  stopTimeoutMs?: number;
  /** Rotate the log file past this size. @defaultValue 10 MiB */
  maxLogBytes?: number;
  /** @defaultValue '/health' */
  healthPath?: string;
  /** Poll interval while starting. @defaultValue 250 */
  readyPollMs?: number;
  /** Poll interval once ready. @defaultValue 5_000 */
  healthIntervalMs?: number;
  /** Failed health checks in a row that count as a crash. @defaultValue 3 */
  healthFailureLimit?: number;
}

/** An exit that stop() did not ask for. */
export interface EngineExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** 'unhealthy': we killed it after failed health checks. */
  reason: 'exited' | 'unhealthy';
  outputTail: string[];
  /** A whole sentence saying what happened, when the engine knows better than code/signal (batch jobs). */
  message?: string;
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * One engine child in its own process group (`detached: true`: pid == pgid), so signals to
 * `-pid` reach the workers it forks too (llama-swap Setpgid + signalProcessTree).
 *
 * Lifecycle: start() resolves once GET health is 200, or rejects (START_FAILED if the child
 * exits first, HEALTH_TIMEOUT after killing it). After ready, any exit stop() did not request
 * is emitted once as 'exit', including our own kill after `healthFailureLimit` failed checks.
 * An exit before ready is reported only through start()'s rejection, never as 'exit'.
 */
export class EngineProcess extends EventEmitter<{ exit: [EngineExit] }> {
  readonly model: string;
  readonly port: number;
  readonly baseUrl: string;
  readonly logFile: string;
  private readonly opts: EngineProcessOptions;
  private log: Logger;
  private readonly logOut: RotatingLogFile;
  private readonly stderrRing = new LineRing(50);
  private readonly stdoutRing = new LineRing(50);
  private child: ChildProcess | undefined;
  private exitInfo: ExitInfo | null = null;
  private exited!: Promise<ExitInfo>;
  private streamsClosed!: Promise<void>;
  private isReady = false;
  private stopRequested = false;
  private stopPromise: Promise<void> | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private killedUnhealthy = false;

  constructor(opts: EngineProcessOptions) {
    super();
    this.opts = opts;
    this.model = opts.model;
    this.port = opts.port;
    this.baseUrl = `http://${ENGINE_HOST}:${opts.port}`;
    this.logFile = opts.logFile;
    this.log = opts.log.child({ component: 'engine', model: opts.model });
    this.logOut = new RotatingLogFile(opts.logFile, opts.maxLogBytes ?? 10 * 1024 * 1024, 2);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** True from spawn until the child has exited. */
  get isRunning(): boolean {
    return this.child?.pid !== undefined && this.exitInfo === null;
  }

  /** Recent engine output: stderr lines, or stdout's when stderr said nothing. */
  outputTail(): string[] {
    const err = this.stderrRing.toArray();
    return err.length > 0 ? err : this.stdoutRing.toArray();
  }

  /** Spawns the engine and resolves with the start-to-ready time in ms. Call once. */
  async start(): Promise<number> {
    if (this.child) throw new Error('EngineProcess.start() called twice');
    if (this.stopRequested)
      throw new EngineError('ENGINE_EXITED', `engine for model ${this.model} was stopped before it started`, {
        model: this.model,
      });
    const t0 = performance.now();
    this.spawnChild();
    const outcome = await this.waitReady(Date.now() + this.opts.startupTimeoutMs);
    if (outcome === 'ready') {
      this.isReady = true;
      this.scheduleHealthCheck();
      return Math.round(performance.now() - t0);
    }
    if (outcome === 'timeout') {
      await this.stop();
      throw healthTimeoutError(this.model, this.opts.startupTimeoutMs, this.logFile, this.outputTail());
    }
    this.signalGroup('SIGKILL'); // the leader is gone; reap anything it left in its group
    await Promise.race([this.streamsClosed, sleep(500, undefined, { ref: false })]);
    if (this.stopRequested) {
      throw new EngineError('ENGINE_EXITED', `engine for model ${this.model} was stopped during start-up`, {
        model: this.model,
        logFile: this.logFile,
      });
    }
    const info = this.exitInfo ?? { code: null, signal: null };
    throw startFailedError({
      model: this.model,
      logFile: this.logFile,
      outputTail: this.outputTail(),
      exitCode: info.code,
      signal: info.signal,
    });
  }

  /**
   * SIGTERM the group, SIGKILL it after stopTimeoutMs, await the exit, then confirm the port
   * is closed. Idempotent: every caller gets the same promise.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.doStop();
    return this.stopPromise;
  }

  private spawnChild(): void {
    const { command, args, env } = this.opts.command;
    this.logOut.write(`--- ${new Date().toISOString()} starting ${command} ${redactArgs(args).join(' ')}\n`);
    // Inherit the parent's environment (PATH, CUDA_VISIBLE_DEVICES, HF_HOME…) like spawn's default.
    const child = spawn(command, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.child = child;
    this.log = this.log.child({ enginePid: child.pid });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => this.onExit({ code, signal }, resolve));
      // spawn failures (ENOENT, EACCES) emit 'error' and no 'exit'.
      child.once('error', (err) => {
        this.stderrRing.push(`[spawn error] ${err.message}`);
        if (child.pid === undefined) this.onExit({ code: null, signal: null }, resolve);
      });
    });
    this.streamsClosed = Promise.all([
      this.pipeLines(child.stdout, 'stdout'),
      this.pipeLines(child.stderr, 'stderr'),
    ]).then(() => undefined);
    this.log.info({ port: this.port, logFile: this.logFile }, 'engine spawned');
  }

  private pipeLines(stream: Readable, name: 'stdout' | 'stderr'): Promise<void> {
    const ring = name === 'stderr' ? this.stderrRing : this.stdoutRing;
    const rl = createInterface({ input: stream, crlfDelay: Infinity });
    rl.on('line', (line) => {
      ring.push(line);
      this.logOut.write(`${line}\n`);
      this.log.debug({ stream: name }, line);
    });
    return new Promise((resolve) => rl.once('close', resolve));
  }

  private onExit(info: ExitInfo, resolve: (i: ExitInfo) => void): void {
    if (this.exitInfo) return;
    this.exitInfo = info;
    clearTimeout(this.healthTimer);
    resolve(info);
    if (!this.isReady || this.stopRequested) return;
    void this.reportUnexpectedExit(info);
  }

  private async reportUnexpectedExit(info: ExitInfo): Promise<void> {
    this.signalGroup('SIGKILL'); // the leader died: take its workers with it
    await Promise.race([this.streamsClosed, sleep(500, undefined, { ref: false })]);
    const reason = this.killedUnhealthy ? 'unhealthy' : 'exited';
    this.logOut.close();
    this.emit('exit', { ...info, reason, outputTail: this.outputTail() });
  }

  private async waitReady(deadline: number): Promise<'ready' | 'exited' | 'timeout'> {
    const url = `${this.baseUrl}${this.opts.healthPath ?? '/health'}`;
    let delay = 50; // first poll soon: the simulator and llama-server are ready in ms
    for (;;) {
      const wait = Math.max(0, Math.min(delay, deadline - Date.now()));
      const r = await Promise.race([this.exited.then(() => 'exited' as const), sleep(wait, 'tick' as const)]);
      if (r === 'exited' || this.stopRequested) return 'exited';
      if (await checkHealth(url, Math.max(250, Math.min(2000, deadline - Date.now()))))
        return this.exitInfo ? 'exited' : 'ready';
      if (this.exitInfo) return 'exited';
      if (Date.now() >= deadline) return 'timeout';
      delay = this.opts.readyPollMs ?? 250;
    }
  }

  /** Chained timeouts, not setInterval: checks never overlap on a slow engine. */
  private scheduleHealthCheck(failures = 0): void {
    // Fire and forget, as before: checkHealth turns a failed check into `false`.
    this.healthTimer = setTimeout(() => void this.healthCheck(failures), this.opts.healthIntervalMs ?? 5_000);
    this.healthTimer.unref();
  }

  private async healthCheck(failures: number): Promise<void> {
    if (this.stopRequested || this.exitInfo) return;
    const ok = await checkHealth(`${this.baseUrl}${this.opts.healthPath ?? '/health'}`);
    if (this.stopRequested || this.exitInfo) return;
    const n = ok ? 0 : failures + 1;
    if (n < (this.opts.healthFailureLimit ?? 3)) return this.scheduleHealthCheck(n);
    // vLLM can answer 503 forever with a dead engine core: treat it as a crash.
    this.log.warn({ failures: n }, 'engine unhealthy, killing it');
    this.killedUnhealthy = true;
    this.signalGroup('SIGKILL');
  }

  private async doStop(): Promise<void> {
    this.stopRequested = true;
    clearTimeout(this.healthTimer);
    if (this.child?.pid === undefined) return this.logOut.close();
    if (!this.exitInfo) {
      this.signalGroup('SIGTERM');
      const timeoutMs = this.opts.stopTimeoutMs ?? 10_000;
      const r = await Promise.race([this.exited, sleep(timeoutMs, 'timeout' as const, { ref: false })]);
      if (r === 'timeout') {
        this.log.warn({ timeoutMs }, 'engine ignored SIGTERM, sending SIGKILL');
        this.signalGroup('SIGKILL');
      }
      await this.exited;
    }
    this.signalGroup('SIGKILL'); // members of the group that outlived the leader
    await Promise.race([this.streamsClosed, sleep(500, undefined, { ref: false })]);
    // vLLM sets SO_REUSEPORT: confirm nobody is left listening before the port is reused.
    if (!(await waitPortClosed(this.port, 5_000)))
      this.log.warn({ port: this.port }, 'engine port still open after stop');
    this.logOut.close();
    this.log.info({ code: this.exitInfo?.code, signal: this.exitInfo?.signal }, 'engine stopped');
  }

  private signalGroup(signal: NodeJS.Signals): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH')
        this.log.warn({ err, signal }, 'cannot signal engine process group');
    }
  }
}

/** Hides the value after secret-bearing flags in the log header (`--api-key K`). */
function redactArgs(args: readonly string[]): string[] {
  return args.map((a, i) => (i > 0 && /^--(api-key|hf-token|token)$/.test(args[i - 1]!) ? '[redacted]' : a));
}
