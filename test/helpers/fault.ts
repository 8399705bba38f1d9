/**
 * The fault matrix: a long-lived stack (own redis-server with AOF, API process, worker
 * process, simulator engine) on which each trial runs one batch while random faults land
 * mid-batch, then checks that every request was answered exactly once. Used by
 * test/e2e/fault-matrix.test.ts (a few dozen trials in CI) and scripts/soak.ts (hundreds).
 * No vitest imports: the soak script runs it under plain node.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import OpenAI, { toFile } from 'openai';
import { freePort, startRedis, type TestRedis } from './redis-server.js';
import { startMain, waitForOutput, type ServerProcess } from './processes.js';
import { chatLines } from './batch.js';
import { mulberry32 } from '../../simulator/text.js';
import { isProcessAlive } from '../../src/os/process.js';

/** A seeded RNG to draw fault moments (the simulator's mulberry32). */
export const rngFrom = mulberry32;

export type FaultKind = 'worker-kill' | 'api-kill' | 'engine-kill' | 'redis-kill' | 'redis-shutdown' | 'redis-flushall';
export const CI_FAULTS: readonly FaultKind[] = [
  'worker-kill',
  'api-kill',
  'engine-kill',
  'redis-kill',
  'redis-shutdown',
];

export interface StackOptions {
  dir: string;
  model?: string;
  /** max_num_seqs of the simulated engine. */
  slots?: number;
  ttftMs?: number;
  outputTokens?: number;
  /** Extra environment for both processes. */
  env?: Record<string, string>;
}

export interface EngineSample {
  pid: number;
  arrived: number;
  /** Requests the engine is serving or holding in its queue now. */
  running: number;
  waiting: number;
}

const TERMINAL = ['completed', 'failed', 'cancelled', 'expired'];

/** What the worker sends an engine at most at once (run-chunk.ts: slots + queueHeadroom). */
export function inFlightCapacity(slots: number): number {
  return slots + Math.min(16, Math.max(2, Math.ceil(slots / 4)));
}

export class FaultStack {
  readonly model: string;
  readonly slots: number;
  readonly env: Record<string, string>;
  readonly client: OpenAI;
  redis!: TestRedis;
  api: ServerProcess | undefined;
  worker: ServerProcess | undefined;
  /** Engine kills since the current worker started (its restart policy backs off and gives up after 5). */
  engineKillsThisWorker = 0;
  private redisPort = 0;
  private redisDir = '';
  /** Highest `arrived` seen per engine process (pid): work the engines did, summed over restarts. */
  readonly arrivals = new Map<number, number>();
  readonly log: string[] = [];

  private constructor(
    readonly opts: StackOptions,
    port: number,
  ) {
    this.model = opts.model ?? 'sim-fault';
    this.slots = opts.slots ?? 32;
    this.env = {
      PORT: String(port),
      DATA_DIR: path.join(opts.dir, 'data'),
      MODELS_FILE: path.join(opts.dir, 'models.yaml'),
      QUEUE_PREFIX: `fault${randomBytes(3).toString('hex')}`,
      WORKER_ID: 'fault-worker',
      JOB_LOCK_MS: '2000',
      JOB_STALLED_INTERVAL_MS: '500',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT_MS: '8000',
      ...opts.env,
    };
    this.client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'k', maxRetries: 0, timeout: 20_000 });
  }

  static async start(opts: StackOptions): Promise<FaultStack> {
    const s = new FaultStack(opts, await freePort());
    mkdirSync(opts.dir, { recursive: true });
    const sim = `{ ttft_ms: ${opts.ttftMs ?? 60}, max_concurrency: ${s.slots}, output_tokens: ${opts.outputTokens ?? 6} }`;
    writeFileSync(
      s.env.MODELS_FILE!,
      `models:\n  - id: ${s.model}\n    engine: sim\n    options: { max_num_seqs: ${s.slots} }\n    sim: ${sim}\n`,
    );
    s.redisDir = path.join(opts.dir, 'redis');
    mkdirSync(s.redisDir, { recursive: true });
    s.redisPort = await freePort();
    await s.startRedis();
    await s.startApi();
    await s.startWorker();
    return s;
  }

  note(msg: string) {
    this.log.push(`${new Date().toISOString()} ${msg}`);
  }

  // --- processes ------------------------------------------------------------------------

  async startRedis(): Promise<void> {
    this.redis = await startRedis({ port: this.redisPort, dir: this.redisDir });
    this.env.REDIS_URL = this.redis.url;
  }

  /** Stops redis-server with SIGKILL (AOF written but maybe not fsynced) or SHUTDOWN (clean). */
  async stopRedis(how: 'SIGKILL' | 'SHUTDOWN'): Promise<void> {
    const p = this.redis.proc;
    const exited = new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));
    if (how === 'SIGKILL') p.kill('SIGKILL');
    else {
      const c = new Redis(this.redis.url, { maxRetriesPerRequest: 0, lazyConnect: true });
      c.on('error', () => undefined);
      await c
        .connect()
        .then(() => c.call('SHUTDOWN'))
        .catch(() => undefined);
      c.disconnect();
    }
    await exited;
  }

  async flushRedis(): Promise<void> {
    const c = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    try {
      await c.flushall();
    } finally {
      c.disconnect();
    }
  }

  async startApi(): Promise<void> {
    this.api = startMain('serve', this.env);
    await waitForOutput(this.api, /api listening/, 60_000);
  }

  async startWorker(): Promise<void> {
    this.worker = startMain('worker', this.env);
    this.engineKillsThisWorker = 0;
    // Up, not just spawned (waitForOutput also fails at once if it exits first).
    await waitForOutput(this.worker, /worker started/, 60_000);
  }

  async killApi(): Promise<void> {
    await this.api?.kill('SIGKILL');
  }

  /**
   * SIGKILLs the worker. It is SIGSTOPped first and the engine's counter read: a stopped
   * worker sends nothing, so the count is exact (the engine follows its dead parent out).
   */
  async killWorker(): Promise<void> {
    const w = this.worker;
    if (!w || w.proc.exitCode !== null) return;
    w.proc.kill('SIGSTOP');
    // Requests the worker wrote before it stopped are still arriving; they are still running.
    await this.settleArrivals();
    await w.kill('SIGKILL');
  }

  /** SIGKILLs the engine (the worker's ModelManager restarts it); exact count as above. */
  async killEngine(): Promise<boolean> {
    // Right after a create, or right after another engine kill, the engine may still be
    // (re)starting: kill the live one as soon as it answers.
    const deadline = Date.now() + 30_000;
    const live = async () => {
      const e = this.enginePidPort();
      if (!e || !isProcessAlive(e.pid)) return false;
      return (await this.sampleEngine())?.pid === e.pid;
    };
    while (!(await live()) && Date.now() < deadline) await sleep(50);
    const e = this.enginePidPort();
    const w = this.worker;
    if (!e || !w) return false;
    w.proc.kill('SIGSTOP');
    try {
      await this.settleArrivals();
      process.kill(e.pid, 'SIGKILL');
      this.engineKillsThisWorker += 1;
    } catch {
      return false;
    } finally {
      w.proc.kill('SIGCONT');
    }
    return true;
  }

  /** A graceful worker restart (between trials, to reset the engine restart budget). */
  async restartWorkerGracefully(): Promise<void> {
    await this.sampleEngine();
    await this.worker?.kill('SIGTERM');
    await this.startWorker();
  }

  async close(): Promise<void> {
    await Promise.all([this.api?.kill('SIGKILL'), this.worker?.kill('SIGKILL')]);
    const e = this.enginePidPort();
    if (e) {
      try {
        process.kill(e.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await this.stopRedis('SIGKILL').catch(() => undefined);
  }

  // --- engine accounting ----------------------------------------------------------------

  /** The current engine: pid from its orphan record, port from its last ready line. */
  enginePidPort(): { pid: number; port: number } | null {
    const logs = path.join(this.env.DATA_DIR!, 'logs');
    try {
      const rec = JSON.parse(readFileSync(path.join(logs, `${this.model}.engine.json`), 'utf8')) as {
        enginePid: number;
      };
      const text = readFileSync(path.join(logs, `${this.model}.log`), 'utf8');
      const ports = [...text.matchAll(/"event":"ready".*?"port":(\d+)/g)];
      const port = Number(ports.at(-1)?.[1]);
      return Number.isFinite(port) ? { pid: rec.enginePid, port } : null;
    } catch {
      return null;
    }
  }

  /** Reads the current engine's request counter into `arrivals`. */
  async sampleEngine(): Promise<EngineSample | null> {
    const e = this.enginePidPort();
    if (!e) return null;
    try {
      const r = await fetch(`http://127.0.0.1:${e.port}/sim/stats`, { signal: AbortSignal.timeout(2000) });
      const s = (await r.json()) as { arrived: number; running: number; waiting: number };
      this.arrivals.set(e.pid, Math.max(this.arrivals.get(e.pid) ?? 0, s.arrived));
      return { pid: e.pid, arrived: s.arrived, running: s.running, waiting: s.waiting };
    } catch {
      return null;
    }
  }

  /**
   * With the worker SIGSTOPped nothing new is sent: samples until the engine's counter is
   * unchanged over one more round trip, i.e. it has read every request already written to it.
   */
  async settleArrivals(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let prev = await this.sampleEngine();
    for (;;) {
      const s = await this.sampleEngine();
      if (!s || (prev && s.pid === prev.pid && s.arrived === prev.arrived) || Date.now() > deadline) return;
      prev = s;
    }
  }

  /** Waits until the current engine serves and queues nothing (or it is gone); false on timeout. */
  async engineIdle(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.sampleEngine();
      if (!s || s.running + s.waiting === 0) return true;
      if (Date.now() > deadline) return false;
      await sleep(50);
    }
  }

  totalArrivals(): number {
    let n = 0;
    for (const v of this.arrivals.values()) n += v;
    return n;
  }

  // --- API calls that ride out an API restart ----------------------------------------------

  async retrying<T>(what: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
        await sleep(200);
      }
    }
  }

  async upload(text: string): Promise<string> {
    const f = await this.retrying('upload', async () =>
      this.client.files.create({ file: await toFile(Buffer.from(text), 'in.jsonl'), purpose: 'batch' }),
    );
    return f.id;
  }

  async createBatch(fileId: string, key: string): Promise<OpenAI.Batches.Batch> {
    // The Idempotency-Key makes a create retried across an API crash return the first batch.
    return this.retrying('create batch', () =>
      this.client.batches.create(
        { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' },
        { headers: { 'Idempotency-Key': key } },
      ),
    );
  }

  async retrieve(id: string): Promise<OpenAI.Batches.Batch | null> {
    try {
      return await this.client.batches.retrieve(id);
    } catch {
      return null;
    }
  }

  async linesOf(fileId: string | null | undefined): Promise<Record<string, any>[]> {
    if (!fileId) return [];
    const text = await this.retrying('read file', async () => (await this.client.files.content(fileId)).text());
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, any>);
  }
}

export interface PlannedFault {
  kind: FaultKind;
  /** Fraction of the batch completed when it lands (0 = right after create). */
  at: number;
  /** How long the killed part stays down before it is restarted. */
  downMs: number;
}

export interface TrialResult {
  trial: number;
  seed: number;
  faults: (PlannedFault & { landedAt: number | null; skipped?: string })[];
  /** Requests done when the trial cancelled the batch (cancel trials only). */
  cancelledAt: number | null;
  n: number;
  status: string;
  durationMs: number;
  /** From the last fault's injection to the terminal state. */
  recoveryMs: number | null;
  /** Engine requests beyond one per request that ran: work redone because of the faults. */
  redone: number;
  /** What the redone work may be at most: the in-flight capacity per fault that loses work. */
  redoneBound: number;
  outputLines: number;
  errorLines: number;
  errorCodes: Record<string, number>;
  problems: string[];
}

/** Redone work a fault may cause: what can be in flight when it lands. */
export function redoneAllowance(kind: FaultKind, slots: number): number {
  const cap = inFlightCapacity(slots);
  switch (kind) {
    case 'api-kill':
      return 0; // results wait in the stream; nothing runs twice
    case 'worker-kill':
      // On the engine: at most `cap`. Plus answers the worker had received whose group commit
      // (MULTI) had not returned: their slots were already handed to new requests.
      return 2 * cap;
    case 'engine-kill':
      return cap; // the requests on the engine fail and are retried
    case 'redis-kill':
    case 'redis-shutdown':
      return cap;
    case 'redis-flushall':
      return Number.POSITIVE_INFINITY; // everything queued in Redis is re-sent
  }
}

export function planFaults(rng: () => number, kinds: readonly FaultKind[]): PlannedFault[] {
  const count = rng() < 0.35 ? 2 : 1;
  const ats = Array.from({ length: count }, () => (rng() < 0.12 ? 0 : 0.05 + rng() * 0.8)).sort((a, b) => a - b);
  return ats.map((at) => ({ kind: kinds[Math.floor(rng() * kinds.length)]!, at, downMs: Math.floor(rng() * 1500) }));
}

/**
 * One trial: a fresh batch of `n` requests, the planned faults injected when the batch
 * reaches their progress point, then the exactly-once checks. Never throws for a broken
 * invariant: it lists them in `problems` (the soak collects, the test asserts none).
 */
export async function runTrial(
  stack: FaultStack,
  trial: number,
  seed: number,
  n: number,
  kinds: readonly FaultKind[],
  opts: { terminalTimeoutMs?: number; cancel?: boolean } = {},
): Promise<TrialResult> {
  const terminalTimeoutMs = opts.terminalTimeoutMs ?? 120_000;
  const rng = rngFrom(seed);
  const faults = planFaults(rng, kinds).map((f) => ({
    ...f,
    landedAt: null as number | null,
    skipped: undefined as string | undefined,
  }));
  // A cancel racing the faults and the batch's end: a process-level cancel race.
  const cancelAt = opts.cancel ? 0.05 + rng() * 0.9 : null;
  let cancelledAt: number | null = null;
  const problems: string[] = [];
  const t0 = Date.now();
  // Each engine restart costs the worker's restart budget (5 in 10 min, backing off): a
  // fresh worker every two engine kills keeps trials independent.
  if (stack.engineKillsThisWorker >= 2) await stack.restartWorkerGracefully();
  await stack.sampleEngine();
  const arrivedBefore = stack.totalArrivals();

  const fileId = await stack.upload(chatLines(n, stack.model));
  const batch = await stack.createBatch(fileId, `trial-${seed}-${trial}`);
  stack.note(`trial ${trial} seed ${seed} batch ${batch.id} faults ${JSON.stringify(faults)}`);

  let last: OpenAI.Batches.Batch | null = batch;
  let lastFaultAt: number | null = null;
  const poll = async () => (last = (await stack.retrieve(batch.id)) ?? last);
  for (const f of faults) {
    const deadline = Date.now() + 60_000;
    while (f.at > 0) {
      await poll();
      if (TERMINAL.includes(last.status)) break;
      if ((last.request_counts?.completed ?? 0) >= f.at * n) break;
      if (Date.now() > deadline) {
        problems.push(
          `no progress to ${Math.round(f.at * 100)} % within 60 s (status ${last.status}, counts ${JSON.stringify(last.request_counts)})`,
        );
        break;
      }
      await sleep(40);
    }
    if (TERMINAL.includes(last.status)) {
      f.skipped = 'batch already finished';
      continue;
    }
    f.landedAt = last.request_counts?.completed ?? 0;
    lastFaultAt = Date.now();
    await inject(stack, f, problems);
  }

  // Terminal within a bounded time.
  const deadline = Date.now() + terminalTimeoutMs;
  for (;;) {
    await poll();
    if (
      cancelAt !== null &&
      cancelledAt === null &&
      ((last.request_counts?.completed ?? 0) >= cancelAt * n || TERMINAL.includes(last.status))
    ) {
      cancelledAt = last.request_counts?.completed ?? 0;
      stack.note(`cancel at ${cancelledAt}`);
      // A batch that already finished answers 409 batch_not_cancellable: a valid outcome.
      const answered = (e: unknown) => (e as { status?: number }).status === 409;
      await stack
        .retrying('cancel', () =>
          stack.client.batches.cancel(batch.id).catch((e: unknown) => (answered(e) ? null : Promise.reject(e))),
        )
        .catch((e: Error) => problems.push(`cancel: ${e.message}`));
      await poll();
    }
    if (TERMINAL.includes(last.status)) break;
    if (Date.now() > deadline) {
      problems.push(
        `batch still ${last.status} after ${terminalTimeoutMs} ms (counts ${JSON.stringify(last.request_counts)})`,
      );
      break;
    }
    await sleep(100);
  }
  const done = last;
  const recoveryMs = lastFaultAt === null ? null : Date.now() - lastFaultAt;
  const out = await stack.linesOf(done.output_file_id).catch((e) => (problems.push(`output file: ${e.message}`), []));
  const err = await stack.linesOf(done.error_file_id).catch((e) => (problems.push(`error file: ${e.message}`), []));
  problems.push(...checkExactlyOnce(n, done, out, err, cancelAt !== null ? ['completed', 'cancelled'] : ['completed']));
  // The engine may still be finishing requests of a redelivered chunk: wait until it is idle.
  if (!(await stack.engineIdle())) stack.note('engine still busy 10 s after the batch ended');
  await stack.sampleEngine();
  // Requests an engine answered once (a cancelled batch's batch_cancelled lines never ran).
  const ran = out.length + err.filter((l) => l.error?.code !== 'batch_cancelled').length;
  const redone = stack.totalArrivals() - arrivedBefore - ran;
  const landed = faults.filter((f) => f.landedAt !== null);
  const redoneBound = landed.reduce((s, f) => s + redoneAllowance(f.kind, stack.slots), 0);
  if (redone > redoneBound)
    problems.push(
      `redone work ${redone} exceeds the in-flight bound ${redoneBound} (${landed.map((f) => f.kind).join(', ') || 'no fault'})`,
    );
  const errorCodes: Record<string, number> = {};
  for (const l of err) {
    const c = String(l.error?.code ?? l.response?.body?.error?.code ?? l.response?.status_code);
    errorCodes[c] = (errorCodes[c] ?? 0) + 1;
  }
  return {
    trial,
    seed,
    faults,
    cancelledAt,
    n,
    status: done.status,
    durationMs: Date.now() - t0,
    recoveryMs,
    redone,
    redoneBound,
    outputLines: out.length,
    errorLines: err.length,
    errorCodes,
    problems,
  };
}

async function inject(stack: FaultStack, f: PlannedFault, problems: string[]): Promise<void> {
  stack.note(`inject ${f.kind} down ${f.downMs} ms`);
  const t = Date.now();
  await injectOnly(stack, f, problems);
  stack.note(`injected ${f.kind}: back after ${Date.now() - t} ms`);
}

async function injectOnly(stack: FaultStack, f: PlannedFault, problems: string[]): Promise<void> {
  // sleep(f.downMs): the outage's length, drawn by planFaults (intended randomness, not a wait).
  switch (f.kind) {
    case 'worker-kill':
      await stack.killWorker();
      await sleep(f.downMs);
      await stack.startWorker();
      return;
    case 'api-kill':
      await stack.killApi();
      await sleep(f.downMs);
      await stack.startApi();
      return;
    case 'engine-kill':
      if (!(await stack.killEngine())) problems.push('engine-kill: no engine to kill');
      return;
    case 'redis-kill':
    case 'redis-shutdown':
      await stack.stopRedis(f.kind === 'redis-kill' ? 'SIGKILL' : 'SHUTDOWN');
      await sleep(Math.max(200, f.downMs));
      await stack.startRedis();
      return;
    case 'redis-flushall':
      await stack.flushRedis();
      return;
  }
}

/** Every custom_id exactly once across both files; request_counts agree with the files. */
export function checkExactlyOnce(
  n: number,
  batch: OpenAI.Batches.Batch,
  out: Record<string, any>[],
  err: Record<string, any>[],
  allowed: readonly string[] = ['completed'],
): string[] {
  const problems: string[] = [];
  const cancelledLines = err.filter((l) => l.error?.code === 'batch_cancelled').length;
  if (batch.status === 'completed' && cancelledLines > 0)
    problems.push(`a completed batch has ${cancelledLines} batch_cancelled lines`);
  if (!allowed.includes(batch.status))
    problems.push(`status ${batch.status}${batch.errors ? ` (${JSON.stringify(batch.errors).slice(0, 300)})` : ''}`);
  const seen = new Map<string, number>();
  for (const l of [...out, ...err]) seen.set(l.custom_id, (seen.get(l.custom_id) ?? 0) + 1);
  const dups = [...seen].filter(([, c]) => c > 1).map(([id]) => id);
  const missing: string[] = [];
  for (let i = 0; i < n; i++) if (!seen.has(`req-${i}`)) missing.push(`req-${i}`);
  const extra = [...seen.keys()].filter((id) => !/^req-\d+$/.test(id) || Number(id.slice(4)) >= n);
  if (dups.length) problems.push(`${dups.length} custom_ids more than once (e.g. ${dups.slice(0, 5).join(', ')})`);
  if (missing.length) problems.push(`${missing.length} custom_ids missing (e.g. ${missing.slice(0, 5).join(', ')})`);
  if (extra.length) problems.push(`${extra.length} unknown custom_ids (e.g. ${extra.slice(0, 5).join(', ')})`);
  const rc = batch.request_counts;
  if (!rc || rc.total !== n || rc.completed !== out.length || rc.failed !== err.length) {
    problems.push(
      `request_counts ${JSON.stringify(rc)} disagree with the files (total ${n}, output ${out.length}, error ${err.length})`,
    );
  }
  for (const l of out) {
    const content = l.response?.body?.choices?.[0]?.message?.content as string | undefined;
    if (!content?.includes(`number ${String(l.custom_id).slice(4)}`)) {
      problems.push(`output line of ${l.custom_id} answers another request: ${JSON.stringify(content)}`);
      break;
    }
  }
  return problems;
}
