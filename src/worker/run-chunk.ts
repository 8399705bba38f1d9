import { setMaxListeners } from 'node:events';
import type { Redis } from 'ioredis';
import pLimit, { type LimitFunction } from 'p-limit';
import type { Logger } from '../log/logger.js';
import { newRequestId } from '../domain/ids.js';
import { CHUNK_KEY_TTL_S, keys, type ChunkJob, type ChunkRequest, type ResultMessage } from '../queue/jobs.js';
import { classifyFailure, toOpenAIErrorBody, type EngineClient } from '../engines/client.js';

/** What a chunk needs from the ModelManager: nothing BullMQ-specific crosses this line. */
export interface EngineAccess {
  ensureReady(model: string, signal?: AbortSignal): Promise<{ concurrency: number }>;
  /** ensureReady + mark one request in flight, atomically (no swap can slip in between). */
  lease(model: string, signal?: AbortSignal): Promise<{ client: EngineClient; release: () => void }>;
}

export interface RunChunkDeps {
  redis: Redis;
  prefix: string;
  engines: EngineAccess;
  log: Logger;
  requestTimeoutMs: number;
  maxAttempts: number;
  /** Backoff base between attempts of one request (doubles, capped at 10 s). */
  backoffMs?: number;
}

/**
 * Runs a chunk's requests against the engine and publishes each result the moment it has
 * it (XADD to the results stream plus SADD to the chunk's done-set, atomically). A chunk
 * redelivered after a worker crash skips what is already in the done-set, so the work redone
 * is at most what was in flight when the worker died.
 */
export function createChunkRunner(deps: RunChunkDeps) {
  const k = keys(deps.prefix);
  const limits = new Map<string, LimitFunction>();
  const cancelCache = new Map<string, { at: number; cancelled: boolean }>();

  const capacity = new Map<string, number>();
  const interactive = new Map<string, number>();
  /** Batch requests get the engine's concurrency minus the interactive requests on it (at least 1). */
  const applyLimit = (model: string) => {
    const l = limits.get(model);
    if (l) l.concurrency = Math.max(1, (capacity.get(model) ?? 1) - (interactive.get(model) ?? 0));
  };

  /** One limiter per model, shared by all chunks: the engine gets at most `concurrency` requests. */
  const limiterFor = (model: string, concurrency: number) => {
    let l = limits.get(model);
    if (!l) {
      l = pLimit(concurrency);
      limits.set(model, l);
    }
    if (capacity.get(model) !== concurrency) {
      capacity.set(model, concurrency);
      applyLimit(model);
    }
    return l;
  };

  const isCancelled = async (batchId: string): Promise<boolean> => {
    const c = cancelCache.get(batchId);
    if (c && Date.now() - c.at < 250) return c.cancelled;
    const cancelled = (await deps.redis.exists(k.cancel(batchId))) === 1;
    cancelCache.set(batchId, { at: Date.now(), cancelled });
    if (cancelCache.size > 1000) cancelCache.delete(cancelCache.keys().next().value!);
    return cancelled;
  };

  const call = async (job: ChunkJob, req: ChunkRequest, signal?: AbortSignal): Promise<ResultMessage> => {
    const requestId = newRequestId();
    const base = { t: 'r' as const, batchId: job.batchId, chunkNo: job.chunkNo, idx: req.idx, customId: req.customId, requestId };
    let lastProblem = 'no attempt was made';
    for (let attempt = 1; attempt <= deps.maxAttempts; attempt++) {
      if (attempt > 1) await sleep(Math.min(10_000, (deps.backoffMs ?? 500) * 2 ** (attempt - 2)), signal);
      const { client, release } = await deps.engines.lease(job.model, signal);
      try {
        const res = await client.post(job.endpoint, req.body, {
          timeoutMs: deps.requestTimeoutMs,
          signal,
          headers: { 'content-type': 'application/json', 'x-request-id': requestId },
        });
        if (classifyFailure(res.status) === 'retry' && attempt < deps.maxAttempts) {
          lastProblem = `HTTP ${res.status}`;
          continue;
        }
        return res.status >= 200 && res.status < 300 ? success(base, res.status, res.body) : { ...base, status: res.status, body: JSON.stringify(toOpenAIErrorBody(res.status, res.body)) };
      } catch (err) {
        if (signal?.aborted) throw err;
        if (classifyFailure(err) !== 'retry') throw err;
        lastProblem = (err as Error).message;
      } finally {
        release();
      }
    }
    const message = `The engine did not answer after ${deps.maxAttempts} attempts (last: ${lastProblem}).`;
    return { ...base, status: 0, body: JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'engine_unavailable' } }) };
  };

  const publish = async (job: ChunkJob, msg: ResultMessage) => {
    const doneKey = k.chunkDone(job.batchId, job.chunkNo);
    await deps.redis
      .multi()
      .xadd(k.results, '*', 'm', JSON.stringify(msg))
      .sadd(doneKey, msg.idx)
      .expire(doneKey, CHUNK_KEY_TTL_S)
      .exec();
  };

  const runChunk = async function runChunk(job: ChunkJob, signal?: AbortSignal): Promise<{ ran: number; skipped: number }> {
    if (signal) setMaxListeners(0, signal); // every request of the chunk listens to the job's signal
    const { concurrency } = await deps.engines.ensureReady(job.model, signal);
    const limit = limiterFor(job.model, concurrency);
    const done = new Set((await deps.redis.smembers(k.chunkDone(job.batchId, job.chunkNo))).map(Number));
    let ran = 0;
    let skipped = 0;
    await Promise.all(
      job.requests
        .filter((r) => !done.has(r.idx))
        .map((r) =>
          limit(async () => {
            if (await isCancelled(job.batchId)) {
              skipped += 1;
              return;
            }
            await publish(job, await call(job, r, signal));
            ran += 1;
          }),
        ),
    );
    await deps.redis.xadd(k.results, '*', 'm', JSON.stringify({ t: 'c', batchId: job.batchId, chunkNo: job.chunkNo, attempt: job.attempt }));
    deps.log.debug({ batchId: job.batchId, chunkNo: job.chunkNo, ran, skipped, resumed: done.size }, 'chunk done');
    return { ran, skipped };
  };
  return Object.assign(runChunk, {
    setInteractiveLoad(model: string, inflight: number) {
      if ((interactive.get(model) ?? 0) === inflight) return;
      interactive.set(model, inflight);
      applyLimit(model);
    },
  });
}

/** A 2xx body goes into the output file as is, with its usage read out for the batch totals. */
function success(base: Omit<ResultMessage, 'status' | 'body'>, status: number, body: Buffer): ResultMessage {
  const text = body.toString('utf8');
  try {
    const parsed = JSON.parse(text) as { usage?: Record<string, unknown> };
    return { ...base, status, body: text, usage: readUsage(parsed.usage) };
  } catch {
    const message = 'The engine answered 2xx with a body that is not JSON.';
    return { ...base, status: 502, body: JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'bad_engine_response' } }) };
  }
}

function readUsage(u: Record<string, unknown> | undefined): ResultMessage['usage'] {
  if (!u) return undefined;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const details = (v: unknown, key: string) => (v && typeof v === 'object' ? num((v as Record<string, unknown>)[key]) : 0);
  return {
    input: num(u.prompt_tokens),
    cached: details(u.prompt_tokens_details, 'cached_tokens'),
    output: num(u.completion_tokens),
    reasoning: details(u.completion_tokens_details, 'reasoning_tokens'),
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => (clearTimeout(t), reject(signal!.reason));
    const t = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
