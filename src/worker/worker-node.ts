import { hostname } from 'node:os';
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { chunkQueueName, keys, type ChunkJob } from '../queue/jobs.js';
import { createRedis } from '../queue/connection.js';
import { createChunkRunner, type EngineAccess } from './run-chunk.js';
import { pickModel, type QueueLoad } from './scheduler.js';
import { concurrencyOf } from '../config/models.js';

export interface WorkerNodeDeps {
  config: Config;
  log: Logger;
  redisUrl: string;
  engines: EngineAccess & { list(): unknown[] };
}

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
  const served = env.WORKER_MODELS ? env.WORKER_MODELS.split(',').map((s) => s.trim()).filter(Boolean) : config.models.map((m) => m.id);
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

  for (const model of served) {
    const name = chunkQueueName(model);
    const m = modelById.get(model);
    if (!m) throw new Error(`WORKER_MODELS names "${model}", which is not in ${config.modelsFile}`);
    const concurrency = Math.max(2, Math.ceil((2 * concurrencyOf(m)) / env.BATCH_CHUNK_SIZE));
    const w = new Worker<ChunkJob>(name, async (job: Job<ChunkJob>, _token, signal) => runChunk(job.data, signal), {
      connection: createRedis(deps.redisUrl, `worker-${workerId}-${name}`),
      prefix: env.QUEUE_PREFIX,
      autorun: false,
      concurrency,
      lockDuration: env.JOB_LOCK_MS,
      stalledInterval: env.JOB_STALLED_INTERVAL_MS,
      maxStalledCount: 1000,
    });
    w.on('failed', (job, err) => log.warn({ jobId: job?.id, model, err: err.message }, 'chunk job failed'));
    w.on('error', (err) => log.error({ err, model }, 'bullmq worker error'));
    workers.set(model, w);
    queues.set(model, new Queue<ChunkJob>(name, { connection: redis, prefix: env.QUEUE_PREFIX }));
  }

  const loadOf = async (model: string): Promise<QueueLoad> => {
    const q = queues.get(model)!;
    const counts = await q.getJobCounts('waiting', 'active', 'prioritized', 'delayed');
    const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0);
    const oldest = waiting > 0 ? (await q.getJobs(['waiting', 'prioritized'], 0, 0, true))[0]?.timestamp : undefined;
    return { model, waiting, active: counts.active ?? 0, oldestWaitingAt: oldest ?? null };
  };

  /** Pauses the current model's Worker (BullMQ waits for its running chunks) and starts the next. */
  const switchTo = async (next: string) => {
    const prev = active;
    if (prev) await workers.get(prev)!.pause();
    active = next;
    activeSince = Date.now();
    const w = workers.get(next)!;
    if (!started.has(next)) {
      started.add(next);
      void w.run().catch((err) => log.error({ err, model: next }, 'worker stopped'));
    } else w.resume();
    log.info({ from: prev, to: next }, 'worker switched model queue');
  };

  const schedule = async () => {
    if (closed || switching) return;
    try {
      const loads = await Promise.all(served.map(loadOf));
      const next = pickModel(loads, active, activeSince, Date.now(), env.MODEL_SWITCH_AFTER_MS);
      if (next && next !== active) {
        switching = switchTo(next).finally(() => (switching = undefined));
        await switching;
      }
    } catch (err) {
      if (!closed) log.warn({ err }, 'scheduling failed; retrying');
    }
  };

  const heartbeat = async () => {
    const info = { workerId, models: served, activeModel: active, engines: deps.engines.list(), at: Date.now() };
    await redis.set(k.worker(workerId), JSON.stringify(info), 'PX', HEARTBEAT_MS * 3).catch(() => undefined);
  };

  return {
    workerId,
    start() {
      void schedule();
      void heartbeat();
      timers = [setInterval(() => void schedule(), SCHEDULE_MS), setInterval(() => void heartbeat(), HEARTBEAT_MS)];
      log.info({ workerId, models: served }, 'worker started');
    },
    /** Stops taking chunks; running ones finish (or, past the deadline, are handed back by lock expiry). */
    async close() {
      closed = true;
      timers.forEach(clearInterval);
      await switching?.catch(() => undefined);
      await Promise.all([...workers.values()].map((w) => w.close()));
      await Promise.all([...queues.values()].map((q) => q.close()));
      await redis.del(k.worker(workerId)).catch(() => undefined);
      redis.disconnect();
    },
  };
}
