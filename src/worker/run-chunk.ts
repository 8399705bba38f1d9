import { setMaxListeners } from 'node:events';
import type { Redis } from 'ioredis';
import pLimit, { type LimitFunction } from 'p-limit';
import type { Logger } from '../log/logger.js';
import { newRequestId } from '../domain/ids.js';
import {
  CHUNK_KEY_TTL_S,
  encodeMessage,
  keys,
  type ChunkJob,
  type ChunkRequest,
  type ResultMessage,
} from '../queue/jobs.js';
import { toOpenAIErrorBody } from '../domain/engine-error-body.js';
import { classifyFailure, EngineClient } from '../engines/client.js';

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
  const cancelCache = new Map<string, { at: number; cancelled: Promise<boolean> }>();

  const capacity = new Map<string, number>();
  const interactive = new Map<string, number>();
  /**
   * Batch requests get the engine's concurrency minus the interactive requests on it (at least
   * 1). With no interactive request on the engine they get a little more (queueHeadroom): those
   * few wait in the engine's own queue (vLLM's waiting queue, the simulator's FIFO) and take a
   * slot the instant it frees, instead of after a response → worker → next request round trip.
   * That round trip is a few ms per request; at 50 ms per request it alone idles ~5 % of slots.
   */
  const applyLimit = (model: string) => {
    const l = limits.get(model);
    if (!l) return;
    const slots = capacity.get(model) ?? 1;
    const inter = interactive.get(model) ?? 0;
    l.concurrency = inter > 0 ? Math.max(1, slots - inter) : slots + queueHeadroom(slots);
  };

  /**
   * Batch requests use a connection pool of their own per engine, with a socket for each
   * request the limiter lets through (slots + queueHeadroom): the manager's client has one
   * socket per slot, so the headroom requests would wait in this process instead of in the
   * engine's queue. Replaced when the model's engine comes back on another address.
   */
  const batchClients = new Map<string, EngineClient>();
  const batchClientFor = (model: string, leased: EngineClient): EngineClient => {
    const c = batchClients.get(model);
    if (c && c.baseUrl === leased.baseUrl) return c;
    if (c) void c.destroy().catch(() => undefined);
    const slots = capacity.get(model) ?? 1;
    // The request deadline is the pool's headers/body timeouts (a non-streaming answer's headers
    // come when it is complete), not a per-request AbortSignal.timeout: one timer and signal
    // pair less per request. Both time-outs are classified 'retry', as the signal's was.
    const fresh = new EngineClient(leased.baseUrl, {
      model,
      connections: slots + queueHeadroom(slots),
      headersTimeoutMs: deps.requestTimeoutMs,
      bodyTimeoutMs: deps.requestTimeoutMs,
    });
    batchClients.set(model, fresh);
    return fresh;
  };

  /** One limiter per model, shared by all chunks: the engine gets about `concurrency` requests. */
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

  /** The batch's cancel flag, read at most every 250 ms per batch (concurrent callers share one read). */
  const isCancelled = (batchId: string): Promise<boolean> => {
    const c = cancelCache.get(batchId);
    if (c && Date.now() - c.at < 250) return c.cancelled;
    const read = deps.redis.exists(k.cancel(batchId)).then((n) => n === 1);
    cancelCache.set(batchId, { at: Date.now(), cancelled: read });
    if (cancelCache.size > 1000) cancelCache.delete(cancelCache.keys().next().value!);
    read.catch(() => cancelCache.delete(batchId));
    return read;
  };

  const call = async (job: ChunkJob, req: ChunkRequest, signal?: AbortSignal): Promise<ResultMessage> => {
    const requestId = newRequestId();
    const base = {
      t: 'r' as const,
      batchId: job.batchId,
      chunkNo: job.chunkNo,
      idx: req.idx,
      customId: req.customId,
      requestId,
    };
    let lastProblem = 'no attempt was made';
    for (let attempt = 1; attempt <= deps.maxAttempts; attempt++) {
      if (attempt > 1) await sleep(Math.min(10_000, (deps.backoffMs ?? 500) * 2 ** (attempt - 2)), signal);
      const { client, release } = await deps.engines.lease(job.model, signal);
      const started = performance.now();
      try {
        const res = await batchClientFor(job.model, client).post(job.endpoint, req.body, {
          signal,
          headers: { 'content-type': 'application/json', 'x-request-id': requestId },
        });
        if (classifyFailure(res.status) === 'retry' && attempt < deps.maxAttempts) {
          lastProblem = `HTTP ${res.status}`;
          continue;
        }
        const latencyMs = Math.round(performance.now() - started);
        return res.status >= 200 && res.status < 300
          ? { ...success(base, res.status, res.body), latencyMs }
          : { ...base, status: res.status, body: JSON.stringify(toOpenAIErrorBody(res.status, res.body)), latencyMs };
      } catch (err) {
        if (signal?.aborted) throw err;
        if (classifyFailure(err) !== 'retry') throw err;
        lastProblem = (err as Error).message;
      } finally {
        release();
      }
    }
    const message = `The engine did not answer after ${deps.maxAttempts} attempts (last: ${lastProblem}).`;
    return {
      ...base,
      status: 0,
      body: JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'engine_unavailable' } }),
    };
  };

  /**
   * Results go to Redis in group commits: while one MULTI is on the wire, results that
   * arrive meanwhile wait for it and then go together in the next MULTI (each result still
   * XADD + SADD in one transaction, so the stream and the done-set never disagree). No timer:
   * one result alone is sent at once; under load a MULTI carries everything that finished
   * during the previous round trip. A result is acknowledged to its chunk only once its MULTI
   * returned; a crash loses only results not yet committed, and their requests are not in the
   * done-set, so the redelivered chunk runs them again.
   */
  interface Pending {
    job: ChunkJob;
    msg: ResultMessage;
    resolve: () => void;
    reject: (e: unknown) => void;
  }
  let queue: Pending[] = [];
  let flushing = false;
  const flush = async () => {
    if (flushing) return;
    flushing = true;
    try {
      while (queue.length > 0) {
        const batch = queue;
        queue = [];
        const m = deps.redis.multi();
        const doneSets = new Map<string, number[]>();
        for (const p of batch) {
          const doneKey = k.chunkDone(p.job.batchId, p.job.chunkNo);
          m.xadd(k.results, '*', ...encodeMessage(p.msg));
          const idxs = doneSets.get(doneKey);
          if (idxs) idxs.push(p.msg.idx);
          else doneSets.set(doneKey, [p.msg.idx]);
        }
        for (const [key, idxs] of doneSets) m.sadd(key, ...idxs).expire(key, CHUNK_KEY_TTL_S);
        try {
          const res = await m.exec();
          const failed = res?.find(([e]) => e)?.[0];
          if (!res || failed) throw failed ?? new Error('redis MULTI was discarded');
          for (const p of batch) p.resolve();
        } catch (e) {
          for (const p of batch) p.reject(e);
        }
      }
    } finally {
      flushing = false;
    }
  };
  const publish = (job: ChunkJob, msg: ResultMessage): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      queue.push({ job, msg, resolve, reject });
      void flush();
    });

  /** Set when the worker is leaving: requests not yet sent are handed back with their chunk. */
  let draining = false;

  /**
   * `handedBack` > 0: the worker is leaving and that many requests were never sent; no
   * chunk-done message was published, and the caller must put the job back in the queue so
   * another worker runs the rest (the done-set skips what this one finished).
   */
  const runChunk = async function runChunk(
    job: ChunkJob,
    signal?: AbortSignal,
  ): Promise<{ ran: number; skipped: number; handedBack: number }> {
    if (signal) setMaxListeners(0, signal); // every request of the chunk listens to the job's signal
    const { concurrency } = await deps.engines.ensureReady(job.model, signal);
    const limit = limiterFor(job.model, concurrency);
    const done = new Set((await deps.redis.smembers(k.chunkDone(job.batchId, job.chunkNo))).map(Number));
    let ran = 0;
    let skipped = 0;
    let handedBack = 0;
    await Promise.all(
      job.requests
        .filter((r) => !done.has(r.idx))
        .map(async (r) => {
          // The engine slot (limiter) is held only for the engine call: the Redis write of
          // the result happens after the slot is handed to the next request.
          const msg = await limit(async () =>
            draining ? 'back' : (await isCancelled(job.batchId)) ? null : call(job, r, signal),
          );
          if (msg === 'back') {
            handedBack += 1;
            return;
          }
          if (!msg) {
            skipped += 1;
            return;
          }
          await publish(job, msg);
          ran += 1;
        }),
    );
    if (handedBack > 0) {
      deps.log.info(
        { batchId: job.batchId, chunkNo: job.chunkNo, ran, handedBack },
        'worker leaving: chunk handed back',
      );
      return { ran, skipped, handedBack };
    }
    await deps.redis.xadd(
      k.results,
      '*',
      ...encodeMessage({ t: 'c', batchId: job.batchId, chunkNo: job.chunkNo, attempt: job.attempt }),
    );
    deps.log.debug({ batchId: job.batchId, chunkNo: job.chunkNo, ran, skipped, resumed: done.size }, 'chunk done');
    return { ran, skipped, handedBack };
  };
  return Object.assign(runChunk, {
    /** The worker is leaving: requests in flight finish, the rest of each running chunk is handed back. */
    drain() {
      draining = true;
    },
    setInteractiveLoad(model: string, inflight: number) {
      if ((interactive.get(model) ?? 0) === inflight) return;
      interactive.set(model, inflight);
      applyLimit(model);
    },
    /** Closes the batch connection pools (after the last chunk has returned). */
    async close(): Promise<void> {
      const clients = [...batchClients.values()];
      batchClients.clear();
      await Promise.all(clients.map((c) => c.destroy().catch(() => undefined)));
    },
  });
}

/**
 * Batch requests sent beyond the engine's slots, to wait in its queue: a quarter of the slots,
 * 2 to 16. Enough to refill the slots that free at once (the simulator's fixed latency frees
 * them all together; at S = 64 a quarter kept 98 % of slot-time busy, an eighth 95 %), and
 * bounded: an interactive request arriving while no other is in flight queues behind them.
 */
function queueHeadroom(slots: number): number {
  return Math.min(16, Math.max(2, Math.ceil(slots / 4)));
}

/** A 2xx body goes into the output file as is, with its usage read out for the batch totals. */
function success(base: Omit<ResultMessage, 'status' | 'body'>, status: number, body: Buffer): ResultMessage {
  const text = body.toString('utf8');
  try {
    const parsed = JSON.parse(text) as { usage?: Record<string, unknown> };
    return { ...base, status, body: text, usage: readUsage(parsed.usage) };
  } catch {
    const message = 'The engine answered 2xx with a body that is not JSON.';
    return {
      ...base,
      status: 502,
      body: JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'bad_engine_response' } }),
    };
  }
}

function readUsage(u: Record<string, unknown> | undefined): ResultMessage['usage'] {
  if (!u) return undefined;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const details = (v: unknown, key: string) =>
    v && typeof v === 'object' ? num((v as Record<string, unknown>)[key]) : 0;
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
