import { createHash } from 'node:crypto';

/**
 * The wire between the control plane and workers: queue names, job payloads and the
 * messages workers send back. Both sides import only this module, never each other.
 */

/** A model id made safe for Redis key and queue names (ids may hold '/' and ':'). */
export function modelKey(model: string): string {
  const safe = model.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 60);
  const hash = createHash('sha256').update(model).digest('hex').slice(0, 8);
  return `${safe}-${hash}`;
}

/** A BullMQ queue per model: workers pull work of the model they have loaded first. */
export function chunkQueueName(model: string): string {
  return `chunks-${modelKey(model)}`;
}

/**
 * Interactive demand an API process has for a model: requests waiting for it to load and
 * requests in flight on its engine. Workers read it to decide swaps (and to leave interactive
 * traffic room in batch dispatch); it expires by itself if the API process dies.
 */
export interface DemandRecord {
  model: string;
  waiting: number;
  inflight: number;
  /** When the oldest waiting request arrived (ms), or null. */
  waitingSince: number | null;
}

/** Demand per model, summed over every API process's record. */
export function sumDemand(records: readonly DemandRecord[]): Map<string, DemandRecord> {
  const out = new Map<string, DemandRecord>();
  for (const d of records) {
    const sum = out.get(d.model) ?? { model: d.model, waiting: 0, inflight: 0, waitingSince: null };
    sum.waiting += d.waiting;
    sum.inflight += d.inflight;
    if (d.waitingSince !== null) sum.waitingSince = Math.min(sum.waitingSince ?? Infinity, d.waitingSince);
    out.set(d.model, sum);
  }
  return out;
}

/** What a worker advertises (key `worker:<id>`, refreshed every few seconds, expiring). */
export interface WorkerHeartbeat {
  workerId: string;
  models: string[];
  activeModel: string | null;
  /** `detail`: an engine launched as a SLURM/PBS job reports its job (state, queue position, start estimate; `text` is one line). */
  engines: {
    model: string;
    state: string;
    baseUrl: string | null;
    lastError: string | null;
    since: number;
    restarts?: number;
    detail?: { text: string } | null;
  }[];
  at: number;
}

/** One GPU as a worker read it from nvidia-smi; `at` is when (ms). Readers drop stale ones. */
export interface GpuReadingMessage {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number;
  utilizationPct: number | null;
  temperatureC: number | null;
  at: number;
}

/**
 * A worker's GPU readings (key `gpus:<id>`, rewritten every few seconds, expiring with the
 * worker). `present: false` = no nvidia-smi on that machine. A reading older than
 * `GPU_STALE_FACTOR × pollMs` is stale: never shown or exported as live.
 */
export interface WorkerGpus {
  workerId: string;
  present: boolean;
  pollMs: number;
  /** When nvidia-smi last answered with readings (ms), or null. */
  readAt: number | null;
  /** Why the last poll gave no readings (driver failure, timeout), or null. */
  error: string | null;
  gpus: GpuReadingMessage[];
}

export const GPU_STALE_FACTOR = 3;

/** An engine swap on a worker (stream `swaps`, capped). */
export interface SwapMessage {
  workerId: string;
  from: string | null;
  to: string;
  reason: string;
  durationMs: number;
  at: number;
}

/** An operator-visible failure on a worker (stream `errors`, capped). Never holds prompt text. */
export interface OpsErrorMessage {
  at: number;
  source: 'engine' | 'worker';
  workerId: string;
  model?: string;
  message: string;
}

/** Caps of the capped streams (XADD … MAXLEN ~ n). */
export const STREAM_CAPS = { engineLog: 2000, swaps: 1000, errors: 1000 } as const;

export interface ChunkRequest {
  idx: number;
  customId: string;
  /** The request body exactly as it appeared in the input file (JSON text). */
  body: string;
}

export interface ChunkJob {
  batchId: string;
  chunkNo: number;
  attempt: number;
  model: string;
  endpoint: string;
  requests: ChunkRequest[];
}

/**
 * How many chunks a model's engines need around them to stay full (`slots` = max_num_seqs of
 * one engine, `workers` = live workers serving the model, one engine each). Each worker runs
 * `active` chunks at once: at least two engine-fulls of requests wait in its limiter, so its
 * engine never runs dry while one chunk's tail finishes. The control plane keeps `queued`
 * chunks per batch: every worker's active chunks plus about one engine-full per worker waiting
 * in Redis, so when a chunk finishes its worker takes the next one at once instead of waiting
 * for the round trip chunk done → control plane → new chunk, and a batch spreads over all the
 * workers of its model (sized for one, the second worker would find Redis empty). Redis still
 * holds only a few engine-fulls per worker.
 */
export function chunkPlan(slots: number, chunkSize: number, workers = 1): { active: number; queued: number } {
  const active = Math.max(2, Math.ceil((2 * slots) / chunkSize));
  const waiting = Math.max(2, Math.ceil(slots / chunkSize));
  return { active, queued: Math.max(1, Math.floor(workers)) * (active + waiting) };
}

export const chunkJobId = (batchId: string, chunkNo: number, attempt: number) => `${batchId}-${chunkNo}-${attempt}`;

/** One request's outcome, published by a worker as soon as it has it. */
export interface ResultMessage {
  t: 'r';
  batchId: string;
  chunkNo: number;
  idx: number;
  customId: string;
  requestId: string;
  /** HTTP status from the engine, or 0 when the request never got an answer. */
  status: number;
  /** Engine response body (JSON text), or an OpenAI error envelope we built. */
  body: string;
  usage?: { input: number; cached: number; output: number; reasoning: number };
  /** Time of the engine call that answered, as the worker measured it (ms); absent when none answered. */
  latencyMs?: number;
}

/** A worker finished a chunk (all its requests have a result, or were skipped on cancel). */
export interface ChunkDoneMessage {
  t: 'c';
  batchId: string;
  chunkNo: number;
  attempt: number;
}

export type WorkerMessage = ResultMessage | ChunkDoneMessage;

/**
 * A message's fields in the results stream: `m` = the message as JSON, except that a result's
 * body (already JSON text, often most of the bytes) travels as its own field `b`, so it is
 * neither escaped into nor unescaped out of another JSON string.
 */
export function encodeMessage(msg: WorkerMessage): string[] {
  if (msg.t !== 'r') return ['m', JSON.stringify(msg)];
  const { body, ...meta } = msg;
  return ['m', JSON.stringify(meta), 'b', body];
}

/** The inverse of encodeMessage; also reads messages whose body is inside `m`. Throws on garbage. */
export function decodeMessage(fields: readonly string[]): WorkerMessage {
  const msg = JSON.parse(fields[1] ?? '') as WorkerMessage;
  if (msg.t === 'r' && fields[2] === 'b') msg.body = fields[3] ?? '';
  return msg;
}

/** Redis keys outside BullMQ, all under the deployment's prefix. */
export function keys(prefix: string) {
  return {
    results: `${prefix}:results`,
    resultsGroup: 'control-plane',
    chunkDone: (batchId: string, chunkNo: number) => `${prefix}:chunkdone:${batchId}:${chunkNo}`,
    cancel: (batchId: string) => `${prefix}:cancel:${batchId}`,
    worker: (workerId: string) => `${prefix}:worker:${workerId}`,
    workersPattern: `${prefix}:worker:*`,
    demand: (model: string, apiId: string) => `${prefix}:demand:${modelKey(model)}:${apiId}`,
    demandPattern: `${prefix}:demand:*`,
    /**
     * Pub/sub: 'engines' when a worker's engines changed, 'demand' when interactive demand
     * appeared, 'chunks' when a batch got its first queued chunks (workers schedule at once).
     */
    events: `${prefix}:events`,
    /** A worker's GPU readings (WorkerGpus JSON), expiring with the worker. */
    gpus: (workerId: string) => `${prefix}:gpus:${workerId}`,
    gpusPattern: `${prefix}:gpus:*`,
    /** Stream of SwapMessage (field `m`), capped at STREAM_CAPS.swaps. */
    swaps: `${prefix}:swaps`,
    /** Stream of OpsErrorMessage (field `m`), capped at STREAM_CAPS.errors. */
    opsErrors: `${prefix}:ops-errors`,
    /** Stream of one engine's output lines (fields `t` ms, `l` line), capped at STREAM_CAPS.engineLog. */
    engineLog: (workerId: string, model: string) => `${prefix}:enginelog:${workerId}:${modelKey(model)}`,
  };
}

/** How long per-chunk bookkeeping lives in Redis (longer than any batch window). */
export const CHUNK_KEY_TTL_S = 3 * 24 * 3600;
