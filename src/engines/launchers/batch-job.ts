import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { closeSync, mkdirSync, openSync, readSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LauncherConfig, ModelConfig } from '../../config/models.js';
import type { Logger } from '../../log/logger.js';
import type { EngineExit } from '../engine-process.js';
import { EngineError, formatTail } from '../errors.js';
import { allocatePort, checkHealth } from '../net.js';
import { LineRing, RotatingLogFile, safeFileName } from '../output-log.js';
import { clearRecord, loadRecord, recordFile, saveRecord, WaitHistory, type JobRecord } from './job-store.js';
import { JobRejectedError, SchedulerUnavailableError, type JobStatus, type Scheduler } from './scheduler.js';
import { buildJobScript, ENDPOINT_MARK } from './script.js';
import { SshTunnel, tunnelArgv } from './tunnel.js';
import type { EngineDetail, EngineInstance, EngineInstanceEvents } from './types.js';

export interface BatchJobEngineOptions {
  model: ModelConfig;
  launcher: LauncherConfig;
  scheduler: Scheduler;
  /** The engine log (the job's output is copied into it, as a local engine's output is). */
  logFile: string;
  log: Logger;
  /** Job scripts, job outputs, the persisted job id and the wait history live here (must be readable by the job's nodes for the output). */
  stateDir: string;
  /** From RUNNING to /health 200. */
  startupTimeoutMs: number;
  maxLogBytes?: number;
  /** Health checks once ready. @defaultValue 5_000 */
  healthIntervalMs?: number;
  /** @defaultValue 3 */
  healthFailureLimit?: number;
  /** Submit a new job even when a live one is recorded (a replacement). */
  fresh?: boolean;
  /** ssh executable for tunnels (tests). @defaultValue 'ssh' */
  ssh?: string;
}

/**
 * An engine that runs as a batch job (SLURM or PBS): submits the job script (or reconnects to
 * the recorded job), reports the job's state, queue position, start estimate and free GPUs
 * while it waits, copies the job's output into the engine log, reaches the engine at
 * node:port (or through an ssh tunnel), health-checks it, and cancels the job on stop.
 */
export class BatchJobEngine extends EventEmitter<EngineInstanceEvents> implements EngineInstance {
  readonly model: string;
  readonly logFile: string;
  readonly pid = undefined;
  private url = '';
  private readonly o: BatchJobEngineOptions;
  private readonly l: LauncherConfig;
  private readonly s: Scheduler;
  private log: Logger;
  private readonly logOut: RotatingLogFile;
  private readonly ring = new LineRing(50);
  private readonly recordPath: string;
  private readonly history: WaitHistory;
  private readonly jobDir: string;
  private record: JobRecord | null = null;
  private jobId: string | null = null;
  private current: EngineDetail;
  private lastState: { key: string; at: number } | null = null;
  private running = false;
  private ready = false;
  private stopRequested = false;
  private stopPromise: Promise<void> | undefined;
  private wake: AbortController = new AbortController();
  private tunnel: SshTunnel | undefined;
  private tailOffset = 0;
  private tailPartial = '';
  private tailTimer: NodeJS.Timeout | undefined;
  private expiringSent = false;
  private endpoint: { node: string; port: number } | null = null;

  constructor(opts: BatchJobEngineOptions) {
    super();
    this.o = opts;
    this.l = opts.launcher;
    this.s = opts.scheduler;
    this.model = opts.model.id;
    this.logFile = opts.logFile;
    this.log = opts.log.child({ component: 'engine', model: opts.model.id, launcher: opts.launcher.kind });
    this.logOut = new RotatingLogFile(opts.logFile, opts.maxLogBytes ?? 10 * 1024 * 1024, 2);
    const safe = safeFileName(opts.model.id);
    this.jobDir = path.join(opts.stateDir, safe);
    this.recordPath = recordFile(opts.stateDir, safe);
    this.history = new WaitHistory(path.join(opts.stateDir, 'waits.json'));
    this.current = this.emptyDetail();
  }

  get baseUrl(): string {
    return this.url;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** The job id once submitted or reconnected to. */
  get job(): string | null {
    return this.jobId;
  }

  outputTail(): string[] {
    return this.ring.toArray();
  }

  detail(): EngineDetail {
    return this.current;
  }

  async start(): Promise<number> {
    if (this.running || this.stopRequested)
      throw new EngineError('ENGINE_EXITED', `engine for model ${this.model} was stopped before it started`, {
        model: this.model,
      });
    this.running = true;
    try {
      const t0 = Date.now();
      await this.submitOrReconnect();
      this.startTail();
      await this.waitUntilReady();
      this.ready = true;
      void this.monitor();
      return Date.now() - t0;
    } catch (err) {
      // A stop() during the start does its own teardown (and decides whether to cancel the job).
      if (this.stopRequested) await this.stopPromise;
      else await this.teardown(true);
      throw err;
    }
  }

  stop(opts: { release?: boolean } = {}): Promise<void> {
    this.stopPromise ??= (async () => {
      this.stopRequested = true;
      this.wake.abort();
      await this.teardown(opts.release ?? true);
    })();
    return this.stopPromise;
  }

  // ---- submit / reconnect ---------------------------------------------------------------------

  private async submitOrReconnect(): Promise<void> {
    mkdirSync(this.jobDir, { recursive: true });
    // SLURM names the output after the job id (%j); PBS has no such pattern: one file per submission.
    const outputFile = path.join(this.jobDir, this.s.kind === 'slurm' ? 'job-%j.out' : `job-${Date.now()}.out`);
    const endpointFile = path.join(this.jobDir, 'endpoint');
    const name = `bw-${safeFileName(this.model)}`.slice(0, 64);
    const script = buildJobScript(this.s.kind, {
      model: this.o.model,
      launcher: this.l,
      name,
      outputFile,
      endpointFile,
    });
    const scriptHash = createHash('sha256')
      .update(script.replaceAll(outputFile, '<output>'))
      .digest('hex')
      .slice(0, 16);
    const old = loadRecord(this.recordPath);
    if (old && !this.o.fresh) {
      const st = await this.statusOrNull(old.jobId);
      if (st && st.phase !== 'ended' && old.scriptHash === scriptHash) {
        this.record = old;
        this.jobId = old.jobId;
        this.tailOffset = readOffset(this.offsetFile(old.jobId));
        this.note(
          `reconnected to ${this.s.name} job ${old.jobId} (${st.state}), submitted ${new Date(old.submittedAt).toISOString()}`,
        );
        this.log.info(
          { jobId: old.jobId, jobState: st.state },
          'reconnected to a running batch job instead of submitting a new one',
        );
        return;
      }
      if (st && st.phase !== 'ended') {
        this.log.info({ jobId: old.jobId }, 'the recorded job was submitted with another configuration: cancelling it');
        await this.s.cancel(old.jobId).catch(() => undefined);
      }
      clearRecord(this.recordPath);
    }
    const scriptFile = path.join(this.jobDir, 'job.sh');
    writeFileSync(scriptFile, script, { mode: 0o755 });
    let jobId: string;
    try {
      jobId = await this.s.submit(scriptFile);
    } catch (err) {
      const msg =
        err instanceof JobRejectedError || err instanceof SchedulerUnavailableError
          ? err.message
          : (err as Error).message;
      this.note(`submission failed: ${msg}`);
      this.setDetail({ text: `${this.s.name} job not submitted: ${msg}` });
      this.log.warn({ err: msg, script: scriptFile }, 'batch job submission failed');
      throw new EngineError(
        'ENGINE_START_FAILED',
        `engine for model ${this.model} not started: ${msg} (job script: ${scriptFile})`,
        { model: this.model, logFile: this.logFile },
      );
    }
    const realOutput = outputFile.replace('%j', jobId);
    this.record = {
      model: this.model,
      launcher: this.s.kind,
      jobId,
      scriptHash,
      submittedAt: Date.now(),
      outputFile: realOutput,
      endpointFile: `${endpointFile}.${jobId}`,
    };
    this.jobId = jobId;
    saveRecord(this.recordPath, this.record);
    this.note(`submitted ${this.s.name} job ${jobId} (script ${scriptFile})`);
    this.log.info({ jobId, script: scriptFile, output: realOutput }, 'batch job submitted');
  }

  // ---- waiting for the job, then the engine ---------------------------------------------------

  private async waitUntilReady(): Promise<void> {
    const rec = this.record!;
    let runningSince: number | null = null;
    let unreachableSince: number | null = null;
    for (;;) {
      if (this.stopRequested) throw this.stoppedError();
      let st: JobStatus | null;
      try {
        st = await this.s.status(rec.jobId);
        unreachableSince = null;
      } catch (err) {
        unreachableSince ??= Date.now();
        this.setDetail({
          text: `${this.s.name} job ${rec.jobId}: ${(err as Error).message} (for ${secs(Date.now() - unreachableSince)})`,
        });
        this.transition('UNREACHABLE', null);
        await this.pause();
        continue;
      }
      if (!st || st.phase === 'ended') {
        this.transition(st?.state ?? 'ENDED', st?.reason ?? null);
        await this.readTail();
        this.clearOwnRecord();
        throw new EngineError(
          'ENGINE_START_FAILED',
          `${this.s.name} job ${rec.jobId} for model ${this.model} ended${st ? ` (${st.state}${st.reason ? `, ${st.reason}` : ''})` : ''} before its engine was ready; last output: ${formatTail(this.ring.toArray())} — see ${rec.outputFile} and the engine log at ${this.logFile}`,
          { model: this.model, logFile: this.logFile, outputTail: this.ring.toArray() },
        );
      }
      this.transition(st.state, st.reason);
      if (st.phase === 'pending') {
        if (st.neverStarts) {
          await this.s.cancel(rec.jobId).catch(() => undefined);
          this.clearOwnRecord();
          const msg = `${st.neverStarts} — job ${rec.jobId} cancelled`;
          this.setDetail({ text: msg, jobState: st.state, reason: st.reason });
          throw new EngineError('ENGINE_START_FAILED', `engine for model ${this.model} not started: ${msg}`, {
            model: this.model,
            logFile: this.logFile,
          });
        }
        await this.describePending(st);
        if (this.l.queue_timeout_s > 0 && Date.now() - rec.submittedAt > this.l.queue_timeout_s * 1000) {
          await this.s.cancel(rec.jobId).catch(() => undefined);
          this.clearOwnRecord();
          throw new EngineError(
            'ENGINE_START_FAILED',
            `${this.s.name} job ${rec.jobId} for model ${this.model} waited in the queue longer than launcher.queue_timeout_s (${this.l.queue_timeout_s} s) and was cancelled — ${this.current.text}`,
            { model: this.model },
          );
        }
      } else if (st.phase === 'running' || st.phase === 'ending') {
        runningSince ??= Date.now();
        await this.readTail();
        if (!this.endpoint) this.endpoint = this.readEndpoint(rec);
        const where = this.endpoint
          ? `${this.endpoint.node}:${this.endpoint.port}`
          : 'its node and port (not written yet)';
        this.setDetail({
          text: `${this.s.name} job ${rec.jobId} RUNNING on ${st.node ?? '?'} for ${secs(Date.now() - runningSince)}: waiting for the engine at ${where} to answer /health${this.monitorSuffix(st.node)}`,
          jobState: st.state,
          reason: st.reason,
          node: st.node,
          queuePosition: null,
          queueLength: null,
          estimatedStart: null,
          estimateSource: null,
          timeLeftS: st.timeLeftS,
        });
        if (this.endpoint) {
          if (!this.url) await this.connect(this.endpoint);
          if (this.url && (await checkHealth(`${this.url}/health`, 2_000))) {
            this.setDetail({ text: this.runningText(st) });
            this.log.info(
              { jobId: rec.jobId, node: this.endpoint.node, port: this.endpoint.port, baseUrl: this.url },
              'batch job engine ready',
            );
            return;
          }
        }
        if (Date.now() - runningSince > this.o.startupTimeoutMs) {
          await this.readTail();
          await this.s.cancel(rec.jobId).catch(() => undefined);
          this.clearOwnRecord();
          throw new EngineError(
            'ENGINE_HEALTH_TIMEOUT',
            `engine for model ${this.model} (${this.s.name} job ${rec.jobId}) was not healthy within ${Math.round(this.o.startupTimeoutMs / 1000)} s of the job starting and the job was cancelled; last output: ${formatTail(this.ring.toArray())} — raise startup_timeout_s if loading is just slow, or check ${rec.outputFile}`,
            { model: this.model, logFile: this.logFile, outputTail: this.ring.toArray() },
          );
        }
      }
      await this.pause(st.phase === 'running' ? Math.min(1_000, this.l.poll_s * 1000) : undefined);
    }
  }

  private async describePending(st: JobStatus): Promise<void> {
    const rec = this.record!;
    const [pos, est, gpus] = await Promise.all([
      this.s.queuePosition(rec.jobId, this.l.partition).catch(() => null),
      this.s.estimatedStart(rec.jobId).catch(() => null),
      this.s.gpusFree(this.l.partition).catch(() => null),
    ]);
    let estimatedStart = est;
    let estimateSource: EngineDetail['estimateSource'] = est ? 'scheduler' : null;
    let estText: string;
    if (est) estText = `estimated start ${iso(est)} (${this.s.name}'s estimate)`;
    else {
      const h = this.history.estimate(this.shape());
      if (h) {
        estimatedStart = rec.submittedAt + h.waitMs;
        estimateSource = 'history';
        estText = `estimated start ${iso(estimatedStart)} (median wait of the last ${h.samples} job${h.samples === 1 ? '' : 's'} of this shape: ${secs(h.waitMs)})`;
      } else estText = 'no start estimate yet';
    }
    const parts = [
      pos ? `position ${pos.position} of ${pos.pending} pending` : null,
      estText,
      gpus
        ? `${gpus.free} of ${gpus.total} GPUs free in ${this.l.partition ? `partition ${this.l.partition}` : 'the cluster'}`
        : null,
    ].filter(Boolean);
    const text = `${this.s.name} job ${rec.jobId} ${st.state}${st.reason ? ` (${st.reason})` : ''} for ${secs(Date.now() - rec.submittedAt)}: ${parts.join(', ')}${this.monitorSuffix(null)}`;
    this.setDetail({
      text,
      jobState: st.state,
      reason: st.reason,
      node: null,
      queuePosition: pos?.position ?? null,
      queueLength: pos?.pending ?? null,
      estimatedStart,
      estimateSource,
      gpusFree: gpus?.free ?? null,
      gpusTotal: gpus?.total ?? null,
      timeLeftS: null,
    });
  }

  /** The engine's node and port: the endpoint file, else the mark in the job output. */
  private readEndpoint(rec: JobRecord): { node: string; port: number } | null {
    const parse = (text: string) => {
      const m = /^(\S+)\s+(\d+)\s*$/.exec(text.trim());
      return m ? { node: m[1]!, port: Number(m[2]) } : null;
    };
    try {
      const e = parse(readFileSync(rec.endpointFile, 'utf8'));
      if (e) return e;
    } catch {
      /* not yet */
    }
    const line = this.ring.toArray().find((l) => l.startsWith(`${ENDPOINT_MARK} `));
    return line ? parse(line.slice(ENDPOINT_MARK.length + 1)) : null;
  }

  private async connect(ep: { node: string; port: number }): Promise<void> {
    if (!this.l.tunnel) {
      this.url = `http://${ep.node}:${ep.port}`;
      return;
    }
    const local = await allocatePort();
    const argv = tunnelArgv(this.l.tunnel, local, ep.node, ep.port);
    const t = new SshTunnel(argv, this.o.ssh);
    this.tunnel = t;
    t.start((code) => {
      this.log.warn({ code, stderr: t.stderr.slice(-3) }, 'ssh tunnel exited');
      if (this.tunnel === t) {
        this.tunnel = undefined;
        if (!this.ready) this.url = ''; // the next poll opens a new one
      }
    });
    this.url = `http://127.0.0.1:${local}`;
    this.note(`ssh tunnel: ssh ${argv.join(' ')}`);
    this.log.info({ argv, localPort: local }, 'ssh tunnel started');
  }

  // ---- once ready ---------------------------------------------------------------------------

  private async monitor(): Promise<void> {
    const rec = this.record!;
    const interval = this.o.healthIntervalMs ?? 5_000;
    const limit = this.o.healthFailureLimit ?? 3;
    let failures = 0;
    let nextStatus = 0;
    let lastStatus: JobStatus | null = null;
    while (!this.stopRequested) {
      await this.pause(Math.min(interval, this.l.poll_s * 1000));
      if (this.stopRequested) return;
      if (Date.now() >= nextStatus) {
        nextStatus = Date.now() + this.l.poll_s * 1000;
        try {
          const st = await this.s.status(rec.jobId);
          if (this.stopRequested) return;
          if (!st || st.phase === 'ended') {
            this.transition(st?.state ?? 'ENDED', st?.reason ?? null);
            return this.lost(
              `${this.s.name} job ${rec.jobId} ended (${st ? `${st.state}${st.reason ? `, ${st.reason}` : ''}` : 'no longer in the queue: finished, cancelled or timed out'})`,
              'exited',
            );
          }
          this.transition(st.state, st.reason);
          lastStatus = st;
          this.setDetail({
            text: this.runningText(st),
            jobState: st.state,
            reason: st.reason,
            node: st.node,
            timeLeftS: st.timeLeftS,
          });
          if (
            !this.expiringSent &&
            this.l.replace_before_s > 0 &&
            st.timeLeftS !== null &&
            st.timeLeftS <= this.l.replace_before_s
          ) {
            this.expiringSent = true;
            this.note(
              `${this.s.name} job ${rec.jobId}: ${st.timeLeftS} s left of the time limit: asking for a replacement job`,
            );
            this.log.info({ jobId: rec.jobId, timeLeftS: st.timeLeftS }, 'batch job nears its time limit');
            this.emit('expiring', { timeLeftS: st.timeLeftS });
          }
        } catch {
          /* controller unreachable: the health check decides */
        }
      }
      const ok = await checkHealth(`${this.url}/health`, 2_000);
      if (this.stopRequested) return;
      failures = ok ? 0 : failures + 1;
      if (failures >= limit) {
        this.log.warn({ jobId: rec.jobId, failures }, 'batch job engine unhealthy, cancelling the job');
        await this.s.cancel(rec.jobId).catch(() => undefined);
        return this.lost(
          `the engine of ${this.s.name} job ${rec.jobId} stopped answering health checks (${failures} in a row${lastStatus ? `, job ${lastStatus.state}` : ''}); the job was cancelled`,
          'unhealthy',
        );
      }
    }
  }

  private async lost(why: string, reason: EngineExit['reason']): Promise<void> {
    await this.readTail();
    this.note(why);
    this.clearOwnRecord();
    this.running = false;
    this.setDetail({ text: why });
    await this.teardown(false);
    this.emit('exit', {
      code: null,
      signal: null,
      reason,
      outputTail: this.ring.toArray(),
      message: `${why}; last output: ${formatTail(this.ring.toArray())} — see the engine log at ${this.logFile}`,
    });
  }

  private runningText(st: JobStatus): string {
    const left = st.timeLeftS !== null ? `, ${secs(st.timeLeftS * 1000)} left` : '';
    return `${this.s.name} job ${this.jobId} ${st.state} on ${st.node ?? this.endpoint?.node ?? '?'}, engine at ${this.endpoint ? `${this.endpoint.node}:${this.endpoint.port}` : '?'}${this.tunnel ? ` via ssh tunnel ${this.url}` : ''}${left}${this.monitorSuffix(st.node)}`;
  }

  private monitorSuffix(node: string | null): string {
    const url = this.monitorUrl(node);
    return url ? ` — ${url}` : '';
  }

  private monitorUrl(node: string | null): string | null {
    if (!this.l.monitor_url || !this.jobId) return null;
    const user = safeUser();
    return this.l.monitor_url
      .replaceAll('{job_id}', encodeURIComponent(this.jobId))
      .replaceAll('{user}', encodeURIComponent(user))
      .replaceAll('{partition}', encodeURIComponent(this.l.partition ?? ''))
      .replaceAll('{node}', encodeURIComponent(node ?? ''));
  }

  // ---- teardown -------------------------------------------------------------------------------

  private async teardown(release: boolean): Promise<void> {
    clearInterval(this.tailTimer);
    this.tailTimer = undefined;
    this.tunnel?.stop();
    this.tunnel = undefined;
    const jobId = this.jobId;
    if (release && jobId) {
      try {
        await this.s.cancel(jobId);
        // scancel returns at once; wait (bounded) for the job to leave the queue, so its port and GPUs are free.
        for (let i = 0; i < 40; i++) {
          const st = await this.s.status(jobId).catch(() => undefined);
          if (st === null || st?.phase === 'ended') break;
          await sleep(250);
        }
        this.note(`cancelled ${this.s.name} job ${jobId} (allocation released)`);
        this.setDetail({
          text: `${this.s.name} job ${jobId} cancelled (allocation released)`,
          jobState: 'CANCELLED',
          queuePosition: null,
          queueLength: null,
          timeLeftS: null,
        });
        this.log.info({ jobId }, 'batch job cancelled');
      } catch (err) {
        this.log.warn({ jobId, err: (err as Error).message }, 'could not cancel the batch job');
        this.note(`could not cancel ${this.s.name} job ${jobId}: ${(err as Error).message} — cancel it by hand`);
      }
      this.clearOwnRecord();
    } else if (jobId && this.running) {
      this.note(`left ${this.s.name} job ${jobId} running; the next start reconnects to it`);
      this.setDetail({ text: `${this.s.name} job ${jobId} left running for the next worker start to reconnect to` });
      this.log.info({ jobId }, 'batch job left running for a later reconnect');
    }
    await this.readTail();
    this.running = false;
    this.logOut.close();
  }

  // ---- the job's output into the engine log ---------------------------------------------------

  private startTail(): void {
    this.tailTimer = setInterval(() => void this.readTail(), 500);
    this.tailTimer.unref();
  }

  /** Appends what the job wrote since the last read to the engine log (the way local engines' output is). */
  // eslint-disable-next-line @typescript-eslint/require-await -- sync reads, kept async: five callers await it mid-sequence, and a sync version would change when they resume
  private async readTail(): Promise<void> {
    const file = this.record?.outputFile;
    if (!file) return;
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch {
      return;
    }
    try {
      const size = statSync(file).size;
      if (size < this.tailOffset) this.tailOffset = 0;
      while (this.tailOffset < size) {
        const buf = Buffer.alloc(Math.min(1 << 20, size - this.tailOffset));
        const n = readSync(fd, buf, 0, buf.length, this.tailOffset);
        if (n <= 0) break;
        this.tailOffset += n;
        const text = this.tailPartial + buf.subarray(0, n).toString('utf8');
        const lines = text.split('\n');
        this.tailPartial = lines.pop() ?? '';
        for (const line of lines) {
          this.ring.push(line);
          this.logOut.write(`${line}\n`);
        }
      }
      if (this.jobId) writeOffset(this.offsetFile(this.jobId), this.tailOffset - Buffer.byteLength(this.tailPartial));
    } finally {
      closeSync(fd);
    }
  }

  // ---- state ----------------------------------------------------------------------------------

  /** Logs a job state change with its time and how long the previous state lasted. */
  private transition(state: string, reason: string | null): void {
    const key = `${state}${reason ? ` (${reason})` : ''}`;
    const now = Date.now();
    if (this.lastState?.key === key) return;
    const prev = this.lastState;
    this.lastState = { key, at: now };
    const afterMs = prev ? now - prev.at : now - (this.record?.submittedAt ?? now);
    this.note(
      `${this.s.name} job ${this.jobId}: ${prev ? `${prev.key} → ${key} after ${secs(afterMs)}` : `${key}, ${secs(afterMs)} after submission`}`,
    );
    this.log.info(
      {
        jobId: this.jobId,
        from: prev?.key ?? null,
        to: key,
        at: new Date(now).toISOString(),
        previousStateMs: prev ? afterMs : null,
      },
      'batch job state',
    );
    if (prev && /^PENDING|^Q/.test(prev.key) && /^RUNNING|^R$/.test(state) && this.record)
      this.history.record(this.shape(), now - this.record.submittedAt);
  }

  private setDetail(d: Partial<EngineDetail>): void {
    const next: EngineDetail = {
      ...this.current,
      ...d,
      jobId: this.jobId,
      monitorUrl: this.monitorUrl(d.node ?? this.current.node),
    };
    // Durations in the text ("for 12 s") change every poll: only a change of substance is an event.
    const key = (x: EngineDetail) =>
      JSON.stringify({
        ...x,
        timeLeftS: null,
        text: x.text.replace(/ for \d+(\.\d)? (s|min|h)\b/g, '').replace(/, \d+(\.\d)? (s|min|h) left/g, ''),
      });
    const changed = key(next) !== key(this.current);
    this.current = next;
    if (changed) this.emit('detail', next);
  }

  private emptyDetail(): EngineDetail {
    return {
      text: `${this.s.name} job not submitted yet`,
      launcher: this.l.kind,
      jobId: null,
      jobState: null,
      reason: null,
      node: null,
      queuePosition: null,
      queueLength: null,
      estimatedStart: null,
      estimateSource: null,
      gpusFree: null,
      gpusTotal: null,
      monitorUrl: null,
      timeLeftS: null,
    };
  }

  /** How much of the job's output is already in the engine log: a reconnect goes on from there. */
  private offsetFile(jobId: string): string {
    return path.join(this.jobDir, `job-${safeFileName(jobId)}.offset`);
  }

  /** Jobs of one shape wait alike: what the wait history is keyed by. */
  private shape(): string {
    const l = this.l;
    return [l.kind, l.partition ?? '', l.gpus ?? '', l.cpus ?? '', l.mem ?? '', l.nodes, l.time ?? ''].join('|');
  }

  /** A line in the engine log, marked as ours. */
  private note(text: string): void {
    this.logOut.write(`--- ${new Date().toISOString()} ${text}\n`);
  }

  /** Forgets the recorded job if it is ours (a replacement has recorded its own job over it). */
  private clearOwnRecord(): void {
    if (this.jobId && loadRecord(this.recordPath)?.jobId === this.jobId) clearRecord(this.recordPath);
  }

  private async statusOrNull(jobId: string): Promise<JobStatus | null> {
    try {
      return await this.s.status(jobId);
    } catch {
      // Controller unreachable: assume the recorded job lives (submitting a second would double the allocation).
      return {
        phase: 'pending',
        state: 'UNKNOWN',
        reason: 'controller unreachable',
        node: null,
        timeLeftS: null,
        neverStarts: null,
      };
    }
  }

  /** Waits a poll interval (or until stop). Kept referenced while starting: a start in progress keeps the process alive. */
  private pause(ms = this.l.poll_s * 1000): Promise<void> {
    if (this.wake.signal.aborted) return Promise.resolve();
    return sleep(ms, undefined, { signal: this.wake.signal, ref: !this.ready }).catch(() => undefined);
  }

  private stoppedError(): EngineError {
    return new EngineError(
      'ENGINE_EXITED',
      `engine for model ${this.model} was stopped while its ${this.s.name} job ${this.jobId ?? ''} was starting`,
      { model: this.model, logFile: this.logFile },
    );
  }
}

function secs(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env['USER'] ?? '';
  }
}

function readOffset(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8')) || 0;
  } catch {
    return 0;
  }
}

function writeOffset(file: string, offset: number): void {
  try {
    writeFileSync(file, String(offset));
  } catch {
    /* best effort */
  }
}
