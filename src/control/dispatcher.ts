import { open, type FileHandle } from 'node:fs/promises';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import { readJsonKeys } from '../queue/connection.js';
import {
  chunkJobId,
  chunkPlan,
  chunkQueueName,
  keys,
  type ChunkJob,
  type ChunkRequest,
  type WorkerHeartbeat,
} from '../queue/jobs.js';
import type { BatchesRepo, BatchRow, RequestSlice } from '../store/batches-repo.js';
import type { FileStorage } from '../store/file-storage.js';

export interface DispatcherDeps {
  redis: Redis;
  prefix: string;
  batches: BatchesRepo;
  storage: FileStorage;
  log: Logger;
  chunkSize: number;
  /** Requests the model's engine runs at once (its max_num_seqs). */
  concurrencyOf: (model: string) => number;
  /**
   * Live workers serving the model (one engine each). Default: counted from the workers'
   * heartbeats in Redis, read at most every HEARTBEAT_READ_MS.
   */
  workersOf?: (model: string) => number | Promise<number>;
}

/** A lost chunk (job gone, or failed) is re-sent this many times before its requests fail. */
export const MAX_CHUNK_ATTEMPTS = 5;
/** A chunk whose job vanished is presumed lost only after this long (its results may still be in flight). */
const LOST_GRACE_MS = 15_000;
/** How often the dispatcher re-reads worker heartbeats (workers refresh theirs every 5 s, expiring after 15 s). */
const HEARTBEAT_READ_MS = 2_000;

/**
 * Moves requests from SQLite to workers, in chunks, keeping about three engine-fulls of work
 * queued per batch and per live worker of its model (chunkPlan): what the workers run plus a
 * chunk or two each waiting, so no engine idles between chunks and a batch spreads over every
 * worker serving its model, little enough that Redis never holds a whole input file.
 */
export function createDispatcher(deps: DispatcherDeps) {
  const queues = new Map<string, Queue<ChunkJob>>();
  const handles = new Map<string, Promise<FileHandle>>();
  const k = keys(deps.prefix);

  /** Live workers per model, from their heartbeats (the same keys the engine router reads). */
  let serving = new Map<string, number>();
  let servingAt = 0;
  let reading: Promise<void> | undefined;
  const readHeartbeats = async () => {
    const next = new Map<string, number>();
    for (const hb of await readJsonKeys<WorkerHeartbeat>(deps.redis, k.workersPattern, 1000)) {
      for (const m of new Set(hb.models ?? [])) next.set(m, (next.get(m) ?? 0) + 1);
    }
    for (const m of new Set([...serving.keys(), ...next.keys()])) {
      const before = serving.get(m) ?? 0;
      const now = next.get(m) ?? 0;
      if (servingAt > 0 && before !== now)
        deps.log.info({ model: m, workers: now, before }, 'workers serving the model changed; batch dispatch follows');
    }
    serving = next;
    servingAt = Date.now();
  };
  const workersOf = async (model: string): Promise<number> => {
    if (deps.workersOf) return Math.max(1, await deps.workersOf(model));
    if (Date.now() - servingAt >= HEARTBEAT_READ_MS) {
      reading ??= readHeartbeats()
        .catch((err) => deps.log.warn({ err }, 'reading worker heartbeats failed; dispatch keeps the last count'))
        .finally(() => (reading = undefined));
      await reading;
    }
    // No heartbeat yet (workers starting, or none at all): size for one.
    return Math.max(1, serving.get(model) ?? 0);
  };

  const queueFor = (model: string): Queue<ChunkJob> => {
    let q = queues.get(model);
    if (!q) {
      q = new Queue<ChunkJob>(chunkQueueName(model), {
        connection: deps.redis,
        prefix: deps.prefix,
        defaultJobOptions: {
          attempts: 1,
          removeOnComplete: { age: 3600, count: 5000 },
          removeOnFail: { age: 7 * 24 * 3600 },
        },
      });
      queues.set(model, q);
    }
    return q;
  };

  const inputHandle = (batch: BatchRow): Promise<FileHandle> => {
    let h = handles.get(batch.id);
    if (!h) {
      h = open(deps.storage.pathOf(batch.inputFileId), 'r');
      handles.set(batch.id, h);
      h.catch(() => handles.delete(batch.id));
    }
    return h;
  };

  /** Reads the bodies of a run of requests with one positional read. */
  const readBodies = async (batch: BatchRow, slices: RequestSlice[]): Promise<ChunkRequest[]> => {
    const fh = await inputHandle(batch);
    const first = slices[0]!.offset;
    const last = slices[slices.length - 1]!;
    const span = last.offset + last.length - first;
    const buf = Buffer.allocUnsafe(span);
    await fh.read(buf, 0, span, first);
    return slices.map((s) => {
      const line = JSON.parse(buf.toString('utf8', s.offset - first, s.offset - first + s.length)) as { body: unknown };
      return { idx: s.idx, customId: s.customId, body: JSON.stringify(line.body) };
    });
  };

  const send = async (batch: BatchRow, chunkNo: number, attempt: number, slices: RequestSlice[]) => {
    const requests = await readBodies(batch, slices);
    const job: ChunkJob = {
      batchId: batch.id,
      chunkNo,
      attempt,
      model: batch.model!,
      endpoint: batch.endpoint,
      requests,
    };
    await queueFor(batch.model!).add('chunk', job, { jobId: chunkJobId(batch.id, chunkNo, attempt) });
  };

  return {
    queueFor,
    workersOf,
    /** Tops up the batch's queued chunks. Returns true if nothing is pending or queued any more. */
    async fill(batch: BatchRow): Promise<boolean> {
      const target = chunkPlan(deps.concurrencyOf(batch.model!), deps.chunkSize, await workersOf(batch.model!)).queued;
      let queued = deps.batches.countQueuedChunks(batch.id);
      const before = queued;
      while (queued < target) {
        const chunk = deps.batches.takeChunk(batch.id, deps.chunkSize, Date.now());
        if (!chunk) break;
        await send(batch, chunk.chunkNo, 0, chunk.requests);
        queued += 1;
      }
      // Work for a model that may not be loaded: workers schedule now rather than at their next poll.
      if (before === 0 && queued > 0) await deps.redis.publish(k.events, 'chunks').catch(() => undefined);
      if (queued > 0) return false;
      const c = deps.batches.countByState(batch.id);
      return c.pending === 0 && c.queued === 0;
    },

    /**
     * Finds chunks whose job is gone (Redis lost it) or failed (the worker gave up, e.g. the
     * engine cannot start) and re-sends their unfinished requests; after MAX_CHUNK_ATTEMPTS
     * returns them so the caller can fail them with the reason.
     */
    async reconcile(batch: BatchRow): Promise<{ chunkNo: number; reason: string; requests: RequestSlice[] }[]> {
      const exhausted: { chunkNo: number; reason: string; requests: RequestSlice[] }[] = [];
      const q = queueFor(batch.model!);
      for (const chunk of deps.batches.queuedChunks(batch.id)) {
        if (Date.now() - chunk.sentAt < LOST_GRACE_MS) continue;
        const job = await q.getJob(chunkJobId(batch.id, chunk.chunkNo, chunk.attempt));
        const state = job ? await job.getState() : 'unknown';
        const lost =
          state === 'unknown' ||
          state === 'failed' ||
          (state === 'completed' && Date.now() - (job?.finishedOn ?? 0) > LOST_GRACE_MS);
        if (!lost) continue;
        const unfinished = deps.batches.unfinishedInChunk(batch.id, chunk.chunkNo);
        const reason = job?.failedReason || `the chunk's job was ${state === 'unknown' ? 'lost from Redis' : state}`;
        if (unfinished.length === 0) {
          deps.batches.finishChunk(batch.id, chunk.chunkNo);
          continue;
        }
        if (chunk.attempt + 1 >= MAX_CHUNK_ATTEMPTS) {
          exhausted.push({ chunkNo: chunk.chunkNo, reason, requests: unfinished });
          continue;
        }
        const attempt = deps.batches.bumpChunkAttempt(batch.id, chunk.chunkNo, Date.now());
        deps.log.warn(
          { batchId: batch.id, chunkNo: chunk.chunkNo, attempt, state, reason, requests: unfinished.length },
          're-sending a lost chunk',
        );
        await send(batch, chunk.chunkNo, attempt, unfinished);
      }
      return exhausted;
    },

    /** Removes the batch's chunks that no worker has started (cancel, expiry). */
    async withdrawWaiting(batch: BatchRow): Promise<void> {
      // Cancelled while validating: no model yet, and no chunk was ever sent.
      if (batch.model === null) return;
      const q = queueFor(batch.model);
      for (const chunk of deps.batches.queuedChunks(batch.id)) {
        const job = await q.getJob(chunkJobId(batch.id, chunk.chunkNo, chunk.attempt));
        if (!job) continue;
        const state = await job.getState();
        if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') continue;
        try {
          await job.remove();
          deps.batches.finishChunk(batch.id, chunk.chunkNo);
        } catch {
          // A worker took it meanwhile; it sees the cancel flag and reports the chunk done.
        }
      }
    },

    async release(batchId: string): Promise<void> {
      const h = handles.get(batchId);
      handles.delete(batchId);
      if (h) await (await h.catch(() => null))?.close().catch(() => undefined);
    },

    async close(): Promise<void> {
      for (const id of [...handles.keys()]) await this.release(id);
      await Promise.all([...queues.values()].map((q) => q.close()));
    },
  };
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
