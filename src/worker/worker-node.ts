import { hostname } from 'node:os';
import { Queue, WaitingError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import {
  chunkPlan,
  chunkQueueName,
  keys,
  sumDemand,
  type ChunkJob,
  type DemandRecord,
  type WorkerHeartbeat,
} from '../queue/jobs.js';
import { createRedis, readJsonKeys } from '../queue/connection.js';
import { createChunkRunner, type EngineAccess } from './run-chunk.js';
import { pickModel, type QueueLoad } from './scheduler.js';
import { concurrencyOf } from '../config/models.js';

export interface WorkerNodeDeps {
  config: Config;
  log: Logger;
  redisUrl: string;
  engines: EngineAccess & {
    list(): {
      model: string;
      state: string;
      baseUrl: string | null;
      lastError: string | null;
      since: number;
      restarts?: number;
      detail?: { text: string } | null;
    }[];
    on(event: 'state', listener: () => void): unknown;
  };
}

/**
 * Scheduling round period, a safety net: rounds also run at once when an API process announces
 * interactive demand or a batch's first chunks (pub/sub), and when the active model's queue
 * drains, so neither a swap nor a cold start waits for the next round.
 */
const SCHEDULE_MS = 500;
const HEARTBEAT_MS = 5_000;

/**
 * A GPU worker: one BullMQ Worker per model queue, of which only the scheduled model's runs
 * (one model on the GPU at a time). It reaches the control plane only through Redis.
 *
 * BullMQ settings (docs/architecture.md): lockDuration JOB_LOCK_MS, renewed by BullMQ at half
 * of it; a worker killed with SIGKILL stops renewing, and after the lock lapses the stalled
 * checker (every JOB_STALLED_INTERVAL_MS) moves its chunk back to waiting. maxStalledCount is
 * high because a stall is a dead worker, not a bad job; the done-set makes the redo cheap.
 */
export function createWorkerNode(deps: WorkerNodeDeps) {
  const { config, log } = deps;
  const env = config.env;
  const k = keys(env.QUEUE_PREFIX);
  const workerId = env.WORKER_ID ?? `${hostname()}-${process.pid}`;
  const served = env.WORKER_MODELS
    ? env.WORKER_MODELS.split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : config.models.map((m) => m.id);
  const modelById = new Map(config.models.map((m) => [m.id, m]));
  const redis: Redis = createRedis(deps.redisUrl, `worker-${workerId}`);
  const runChunk = createChunkRunner({
    redis,
    prefix: env.QUEUE_PREFIX,
    engines: deps.engines,
    log: log.child({ component: 'worker', workerId }),
    requestTimeoutMs: env.REQUEST_TIMEOUT_MS,
    maxAttempts: env.REQUEST_MAX_ATTEMPTS,
  });

  const workers = new Map<string, Worker<ChunkJob>>();
  const queues = new Map<string, Queue<ChunkJob>>();
  const started = new Set<string>();
  let active: string | null = null;
  let activeSince = 0;
  let switching: Promise<void> | undefined;
  let timers: NodeJS.Timeout[] = [];
  let closed = false;
  /** Chunks inside the processor, per model (waiting for their turn included). */
  const runningChunks = new Map<string, number>();
  /** Chunks of a model that is not the scheduled one, waiting for its turn (see switchTo). */
  const turnWaiters = new Map<string, Set<{ resolve: () => void; reject: (e: Error) => void }>>();
  const waitForTurn = (model: string, signal?: AbortSignal): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      let set = turnWaiters.get(model);
      if (!set) turnWaiters.set(model, (set = new Set()));
      const w = {
        resolve: () => (signal?.removeEventListener('abort', onAbort), resolve()),
        reject: (e: Error) => (signal?.removeEventListener('abort', onAbort), reject(e)),
      };
      const onAbort = () => (set.delete(w), reject(signal!.reason as Error));
      set.add(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  const giveTurn = (model: string) => {
    const set = turnWaiters.get(model);
    turnWaiters.delete(model);
    for (const w of set ?? []) w.resolve();
  };

  /**
   * The worker is leaving (close): the job goes back to the head of its queue, where another
   * worker takes it at once and runs the requests missing from its done-set. Throwing
   * WaitingError tells BullMQ the job was moved, not failed.
   */
  const handBack = async (job: Job<ChunkJob>, token: string | undefined): Promise<never> => {
    await job.moveToWait(token);
    throw new WaitingError();
  };

  /** The BullMQ processor of a model's queue. */
  const processChunk = async (model: string, job: Job<ChunkJob>, token: string | undefined, signal?: AbortSignal) => {
    runningChunks.set(model, (runningChunks.get(model) ?? 0) + 1);
    try {
      // Only possible right after a fast pause (switchTo): the chunk waits, active in BullMQ
      // (its lock renewed), until its model is scheduled again; its requests never ask the
      // ModelManager for a model that is being swapped out.
      if (model !== active) {
        try {
          await waitForTurn(model, signal);
        } catch (e) {
          if (closed) return await handBack(job, token);
          throw e;
        }
      }
      const result = await runChunk(job.data, signal);
      if (result.handedBack > 0) return await handBack(job, token);
      return result;
    } finally {
      runningChunks.set(model, (runningChunks.get(model) ?? 1) - 1);
    }
  };

  for (const model of served) {
    const name = chunkQueueName(model);
    const m = modelById.get(model);
    if (!m) throw new Error(`WORKER_MODELS names "${model}", which is not in ${config.modelsFile}`);
    const concurrency = chunkPlan(concurrencyOf(m), env.BATCH_CHUNK_SIZE).active;
    const w = new Worker<ChunkJob>(
      name,
      async (job: Job<ChunkJob>, token, signal) => processChunk(model, job, token, signal),
      {
        connection: createRedis(deps.redisUrl, `worker-${workerId}-${name}`),
        prefix: env.QUEUE_PREFIX,
        autorun: false,
        concurrency,
        lockDuration: env.JOB_LOCK_MS,
        stalledInterval: env.JOB_STALLED_INTERVAL_MS,
        maxStalledCount: 1000,
      },
    );
    w.on('failed', (job, err) => log.warn({ jobId: job?.id, model, err: err.message }, 'chunk job failed'));
    // The active model ran out of chunks: decide now whether another model's work is next.
    w.on('drained', () => {
      if (model === active) void schedule();
    });
    w.on('error', (err) => log.error({ err, model }, 'bullmq worker error'));
    workers.set(model, w);
    queues.set(model, new Queue<ChunkJob>(name, { connection: redis, prefix: env.QUEUE_PREFIX }));
  }

  /** Interactive demand per model, summed over every API process (keys expire with them). */
  const readDemand = async (): Promise<Map<string, DemandRecord>> =>
    sumDemand(await readJsonKeys<DemandRecord>(redis, k.demandPattern));

  const loadOf = async (model: string, demand: Map<string, DemandRecord>): Promise<QueueLoad> => {
    const q = queues.get(model)!;
    const counts = await q.getJobCounts('waiting', 'active', 'prioritized', 'delayed');
    const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0);
    const oldest = waiting > 0 ? (await q.getJobs(['waiting', 'prioritized'], 0, 0, true))[0]?.timestamp : undefined;
    const d = demand.get(model);
    return {
      model,
      waiting,
      active: counts.active ?? 0,
      oldestWaitingAt: oldest ?? null,
      interactiveWaiting: d?.waiting ?? 0,
      interactiveInflight: d?.inflight ?? 0,
      interactiveSince: d?.waitingSince ?? null,
    };
  };

  /**
   * Pauses the current model's Worker (BullMQ waits for its running chunks), loads the next
   * model (the ModelManager evicts the old engine once nothing is in flight on it), then starts
   * the next model's Worker. Loading here, not on the first chunk, is what serves interactive
   * demand for a model that has no batch work.
   */
  const switchTo = async (next: string) => {
    const prev = active;
    const t0 = Date.now();
    if (prev) {
      const w = workers.get(prev)!;
      if ((runningChunks.get(prev) ?? 0) === 0) {
        // Nothing of prev runs: stop its Worker without waiting. pause() would close BullMQ's
        // blocking connection, and BullMQ then sleeps 100 ms before it notices: that much on
        // every swap. A chunk the Worker still takes (its blocking read was already under way)
        // sees `active` changed and waits for its model's next turn (processChunk).
        active = next;
        await w.pause(true);
      } else await w.pause(); // waits for prev's running chunks
    }
    const pauseMs = Date.now() - t0;
    active = next;
    activeSince = Date.now();
    try {
      await deps.engines.ensureReady(next);
    } catch (err) {
      log.warn(
        { model: next, err: (err as Error).message },
        'model failed to load; its chunks will fail and be retried',
      );
    }
    const w = workers.get(next)!;
    if (!started.has(next)) {
      started.add(next);
      void w.run().catch((err) => log.error({ err, model: next }, 'worker stopped'));
    } else w.resume();
    giveTurn(next);
    log.info({ from: prev, to: next, pauseMs, ms: Date.now() - t0 }, 'worker switched model queue');
  };

  let scheduling = false;
  let scheduleAgain = false;
  /** One scheduling round at a time; a request during a round runs another right after it. */
  const schedule = async (): Promise<void> => {
    if (scheduling) {
      scheduleAgain = true;
      return;
    }
    scheduling = true;
    try {
      await scheduleRound();
    } finally {
      scheduling = false;
      if (scheduleAgain && !closed) {
        scheduleAgain = false;
        setImmediate(() => void schedule());
      }
    }
  };

  const scheduleRound = async () => {
    if (closed || switching) return;
    try {
      const demand = await readDemand();
      const loads = await Promise.all(served.map((m) => loadOf(m, demand)));
      // Batch dispatch leaves room for interactive requests on the loaded engine.
      for (const l of loads) runChunk.setInteractiveLoad(l.model, l.interactiveInflight);
      const next = pickModel(loads, active, activeSince, Date.now(), {
        switchAfterMs: env.MODEL_SWITCH_AFTER_MS,
        interactive: env.INTERACTIVE_POLICY,
        interactiveMaxWaitMs: env.INTERACTIVE_MAX_WAIT_MS,
      });
      if (next && next !== active) {
        switching = switchTo(next).finally(() => (switching = undefined));
        await switching;
      } else if (next && loads.find((l) => l.model === next)!.interactiveWaiting > 0) {
        // Demand for the model we already serve, whose engine may have gone (idle TTL, crash).
        switching = deps.engines
          .ensureReady(next)
          .then(
            () => undefined,
            (err) => log.warn({ model: next, err: (err as Error).message }, 'model failed to load'),
          )
          .finally(() => (switching = undefined));
      }
    } catch (err) {
      if (!closed) log.warn({ err }, 'scheduling failed; retrying');
    }
  };

  /** The engine URL as the API should use it: our host as seen from the API's machine. */
  const advertised = (baseUrl: string | null) => {
    if (!baseUrl || !env.ENGINE_ADVERTISE_HOST) return baseUrl;
    const u = new URL(baseUrl);
    // Only engines on this host: one launched as a SLURM/PBS job is already at its node's name.
    if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') return baseUrl;
    u.hostname = env.ENGINE_ADVERTISE_HOST;
    return u.origin;
  };

  const heartbeat = async () => {
    const engines = deps.engines.list().map((e) => ({
      model: e.model,
      state: e.state,
      baseUrl: advertised(e.baseUrl),
      lastError: e.lastError,
      since: e.since,
      restarts: e.restarts ?? 0,
      detail: e.detail ?? null,
    }));
    const info: WorkerHeartbeat = { workerId, models: served, activeModel: active, engines, at: Date.now() };
    await redis.set(k.worker(workerId), JSON.stringify(info), 'PX', HEARTBEAT_MS * 3).catch(() => undefined);
  };
  // An API process announces interactive demand or new batch work: schedule now, not at the next round.
  const events: Redis = createRedis(deps.redisUrl, `worker-${workerId}-events`);
  events.on('message', (_channel: string, message: string) => {
    if ((message === 'demand' || message === 'chunks') && !closed) void schedule();
  });
  // Engine state changes are advertised at once: API requests waiting for a load wake up.
  deps.engines.on('state', () => {
    if (closed) return;
    void heartbeat().then(() => redis.publish(k.events, 'engines').catch(() => undefined));
  });

  return {
    workerId,
    start() {
      void schedule();
      void heartbeat();
      void events
        .subscribe(k.events)
        .catch((err) => log.warn({ err }, 'subscribing to API events failed; demand is seen by polling'));
      timers = [setInterval(() => void schedule(), SCHEDULE_MS), setInterval(() => void heartbeat(), HEARTBEAT_MS)];
      log.info({ workerId, models: served }, 'worker started');
    },
    /**
     * Stops taking chunks. Requests in flight finish and publish their results; the rest of each
     * running chunk goes back to the queue for the other workers (past the shutdown deadline, a
     * chunk still running comes back by lock expiry instead).
     */
    async close() {
      closed = true;
      runChunk.drain();
      timers.forEach(clearInterval);
      // Chunks waiting for a turn that will not come fail now (the control plane re-sends them);
      // otherwise closing the Workers would wait for them forever.
      for (const set of turnWaiters.values()) for (const w of set) w.reject(new Error('the worker is shutting down'));
      turnWaiters.clear();
      events.disconnect();
      await switching?.catch(() => undefined);
      await Promise.all([...workers.values()].map((w) => w.close()));
      await runChunk.close();
      await Promise.all([...queues.values()].map((q) => q.close()));
      await redis.del(k.worker(workerId)).catch(() => undefined);
      redis.disconnect();
    },
  };
}
