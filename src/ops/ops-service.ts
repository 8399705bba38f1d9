import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import type { OpsRepo } from '../store/ops-repo.js';
import { readJsonKeys } from '../queue/connection.js';
import {
  GPU_STALE_FACTOR,
  keys,
  sumDemand,
  type DemandRecord,
  type OpsErrorMessage,
  type SwapMessage,
  type WorkerGpus,
  type WorkerHeartbeat,
} from '../queue/jobs.js';
import { ApiError } from '../api/errors.js';
import { followEngineLog } from './log-stream.js';
import { RateWindow, toOpsBatch, toS, waitingReason, type OpsBatch } from './views.js';

export interface OpsServiceDeps {
  redis: Redis;
  prefix: string;
  repo: OpsRepo;
  log: Logger;
  /** Live heartbeats (the engine router's view, refreshed every second). */
  heartbeats: () => WorkerHeartbeat[];
  /** The control plane's own checks: null when fine, else why not. */
  checks: { sqlite(): string | null; redis(): Promise<string | null> };
}

/** A heartbeat older than this is a dead worker (its key expires at 15 s). */
const WORKER_ALIVE_MS = 15_000;
/** How long a worker that stopped sending heartbeats is still listed (alive: false). */
const WORKER_FORGET_MS = 5 * 60_000;
const TICK_MS = 1_000;

export interface OpsWorker {
  id: string;
  models: string[];
  active_model: string | null;
  last_heartbeat_at: number;
  age_s: number;
  alive: boolean;
}
export interface OpsEngine {
  worker_id: string;
  model: string;
  state: string;
  since: number;
  base_url: string | null;
  restarts: number;
  last_error: string | null;
  /** An engine launched as a SLURM/PBS job: job state, queue position, start estimate… (`text` is one line). */
  detail: { text: string } | null;
}
export interface OpsGpu {
  worker_id: string;
  index: number;
  name: string;
  utilization_pct: number | null;
  memory_used_mib: number;
  memory_total_mib: number;
  temperature_c: number | null;
  read_at: number;
}
export interface OpsError {
  at: number;
  source: string;
  batch_id?: string;
  model?: string;
  worker_id?: string;
  message: string;
}

export type OpsService = ReturnType<typeof createOpsService>;

const round1 = (n: number) => Math.round(n * 10) / 10;

/**
 * The control plane's view of the fleet for the operator API, /health and /metrics. It reads
 * only SQLite (through OpsRepo) and what workers publish in Redis (heartbeats, `gpus:<id>`,
 * the swaps / errors / engine-log streams): nothing here reaches a worker directly.
 *
 * One 1 s tick samples active batches' done counts (for throughput_rps and eta_s), remembers
 * workers that stopped sending heartbeats, and emits 'batches' / 'engines' when those lists
 * changed (the SSE stream of /ops/events).
 */
export function createOpsService(deps: OpsServiceDeps) {
  const k = keys(deps.prefix);
  const { redis, repo } = deps;
  const rates = new RateWindow(30_000);
  const seen = new Map<string, WorkerHeartbeat>();
  const events = new EventEmitter<{ batches: [OpsBatch[]]; engines: [OpsEngine[]] }>();
  events.setMaxListeners(0);
  let lastBatches = '';
  let lastEngines = '';

  // The shared connection queues commands while Redis is away (maxRetriesPerRequest: null):
  // operator reads fail fast instead of hanging a scrape or a page.
  const assertRedis = () => {
    if (redis.status !== 'ready') {
      throw new ApiError(
        'service_unavailable',
        `Redis is not connected (${redis.status}): workers' reports are read from it. Check REDIS_URL and that Redis runs, then retry.`,
        null,
        { 'retry-after': '5' },
      );
    }
  };

  const live = (now = Date.now()) => deps.heartbeats().filter((hb) => now - hb.at < WORKER_ALIVE_MS);

  const rememberWorkers = (now: number) => {
    for (const hb of deps.heartbeats()) {
      const prev = seen.get(hb.workerId);
      if (!prev || prev.at <= hb.at) seen.set(hb.workerId, hb);
    }
    for (const [id, hb] of seen) if (now - hb.at > WORKER_FORGET_MS) seen.delete(id);
  };

  const workers = (now = Date.now()): OpsWorker[] => {
    rememberWorkers(now);
    return [...seen.values()]
      .map((hb) => ({
        id: hb.workerId,
        models: hb.models,
        active_model: hb.activeModel,
        last_heartbeat_at: toS(hb.at),
        age_s: round1((now - hb.at) / 1000),
        alive: now - hb.at < WORKER_ALIVE_MS,
      }))
      .sort((a, b) => a.id.localeCompare(b.id));
  };

  const engines = (now = Date.now()): OpsEngine[] =>
    live(now)
      .flatMap((hb) =>
        hb.engines.map((e) => ({
          worker_id: hb.workerId,
          model: e.model,
          state: e.state,
          since: toS(e.since),
          base_url: e.baseUrl,
          restarts: e.restarts ?? 0,
          last_error: e.lastError,
          detail: e.detail ?? null,
        })),
      )
      .sort((a, b) => a.worker_id.localeCompare(b.worker_id) || a.model.localeCompare(b.model));

  const batchViews = (rows: ReturnType<OpsRepo['list']>, now: number): OpsBatch[] => {
    const hbs = live(now);
    const active = repo.list({ active: true, limit: 1000 });
    return rows.map((row) => {
      const rps = rates.rate(row.id);
      const ahead = active
        .filter((b) => b.model === row.model && b.id !== row.id && b.createdAt <= row.createdAt && rates.rate(b.id) > 0)
        .map((b) => b.id);
      return toOpsBatch(row, rps, waitingReason(row, rps, hbs, ahead, now));
    });
  };

  const listBatches = (opts: { active: boolean; limit: number }): OpsBatch[] => batchViews(repo.list(opts), Date.now());
  const getBatch = (id: string): OpsBatch | undefined => {
    const row = repo.get(id);
    return row ? batchViews([row], Date.now())[0] : undefined;
  };

  const readGpus = async (): Promise<WorkerGpus[]> => {
    assertRedis();
    return (await readJsonKeys<WorkerGpus>(redis, k.gpusPattern, 200)).sort((a, b) =>
      a.workerId.localeCompare(b.workerId),
    );
  };

  const isFresh = (w: WorkerGpus, at: number, now: number) => now - at <= GPU_STALE_FACTOR * w.pollMs;

  /** Fresh readings only: a reading older than GPU_STALE_FACTOR × the worker's poll interval is gone. */
  const gpus = async (now = Date.now()): Promise<OpsGpu[]> =>
    (await readGpus()).flatMap((w) =>
      w.gpus
        .filter((g) => isFresh(w, g.at, now))
        .map((g) => ({
          worker_id: w.workerId,
          index: g.index,
          name: g.name,
          utilization_pct: g.utilizationPct,
          memory_used_mib: g.memoryUsedMiB,
          memory_total_mib: g.memoryTotalMiB,
          temperature_c: g.temperatureC,
          read_at: toS(g.at),
        })),
    );

  const readStream = async <T>(key: string, limit: number): Promise<T[]> => {
    assertRedis();
    const entries = (await redis.xrevrange(key, '+', '-', 'COUNT', limit)) as [string, string[]][];
    const out: T[] = [];
    for (const [, fields] of entries) {
      try {
        out.push(JSON.parse(fields[1] ?? '') as T);
      } catch {
        // skip
      }
    }
    return out;
  };

  const swaps = async (limit: number) =>
    (await readStream<SwapMessage>(k.swaps, limit)).map((s) => ({
      worker_id: s.workerId,
      from: s.from,
      to: s.to,
      reason: s.reason,
      duration_ms: s.durationMs,
      at: toS(s.at),
    }));

  /** Failed batches and request failures (SQLite), engine failures and restarts (Redis), newest first. */
  const errors = async (limit: number): Promise<OpsError[]> => {
    const out: OpsError[] = [];
    const fromWorkers = await readStream<OpsErrorMessage>(k.opsErrors, limit).catch((err: Error) => {
      out.push({ at: toS(Date.now()), source: 'api', message: `engine failures cannot be shown: ${err.message}` });
      return [] as OpsErrorMessage[];
    });
    for (const e of fromWorkers) {
      out.push({
        at: toS(e.at),
        source: e.source,
        ...(e.model && { model: e.model }),
        worker_id: e.workerId,
        message: e.message,
      });
    }
    for (const b of repo.recentlyFailed(limit)) {
      out.push({
        at: b.failedAt ?? b.createdAt,
        source: 'batch',
        batch_id: b.id,
        ...(b.model && { model: b.model }),
        message: batchFailure(b.errors),
      });
    }
    for (const b of repo.withFailedRequests(limit)) {
      const at = b.completedAt ?? b.cancelledAt ?? b.expiredAt ?? b.finalizingAt ?? b.inProgressAt ?? b.createdAt;
      const sample = requestFailure(repo.sampleError(b.id));
      out.push({
        at,
        source: 'request',
        batch_id: b.id,
        ...(b.model && { model: b.model }),
        message: `${b.failed} of ${b.total} requests failed${sample ? `; e.g. ${sample}` : ''}`,
      });
    }
    return out.sort((a, b) => b.at - a.at).slice(0, limit);
  };

  const demand = async (): Promise<Map<string, { waiting: number; inflight: number }>> => {
    assertRedis();
    return sumDemand(await readJsonKeys<DemandRecord>(redis, k.demandPattern));
  };

  /** The /health summary (see docs/operator-api.md). */
  const health = async () => {
    const now = Date.now();
    const [sqlite, redisErr] = [deps.checks.sqlite(), await deps.checks.redis()];
    const reasons: string[] = [];
    const notes: string[] = [];
    if (sqlite) reasons.push(`SQLite is not usable: ${sqlite}`);
    if (redisErr) reasons.push(`Redis is down: ${redisErr}. Workers get no work and report nothing.`);
    const ws = workers(now).map((w) => ({
      id: w.id,
      last_heartbeat_at: w.last_heartbeat_at,
      age_s: w.age_s,
      ok: w.alive,
    }));
    const alive = ws.filter((w) => w.ok);
    if (alive.length === 0) {
      const last = ws.sort((a, b) => a.age_s - b.age_s)[0];
      reasons.push(
        `no live worker: batches and interactive requests wait${last ? ` (last heartbeat: worker ${last.id}, ${Math.round(last.age_s)} s ago)` : ''}`,
      );
    }
    for (const w of ws)
      if (!w.ok && alive.length > 0)
        reasons.push(`worker ${w.id} has sent no heartbeat for ${Math.round(w.age_s)} s (stopped or dead)`);
    const engs = engines(now).map((e) => ({ worker_id: e.worker_id, model: e.model, state: e.state, since: e.since }));
    for (const e of engines(now)) {
      const forS = Math.round(now / 1000 - e.since);
      if (e.state === 'failed')
        reasons.push(
          `engine for model ${e.model} on worker ${e.worker_id} failed: ${(e.last_error ?? 'no reason given').slice(0, 300)}`,
        );
      if (e.state === 'starting') notes.push(`model ${e.model} is loading on worker ${e.worker_id} (since ${forS} s)`);
    }
    let gpuList: OpsGpu[] = [];
    if (!redisErr) {
      const all = await readGpus().catch(() => [] as WorkerGpus[]);
      gpuList = await gpus(now).catch(() => []);
      for (const w of all.filter((x) => x.present)) {
        const stale = w.gpus.filter((g) => !isFresh(w, g.at, now));
        if (stale.length > 0 || (w.readAt === null && w.error)) {
          const last = w.readAt ? `last reading ${Math.round((now - w.readAt) / 1000)} s ago` : 'no reading yet';
          reasons.push(`GPU readings of worker ${w.workerId} are stale (${last})${w.error ? `: ${w.error}` : ''}`);
        }
      }
      if (!all.some((w) => w.present)) notes.push('no GPUs: no live worker has nvidia-smi');
    }
    const status: 'healthy' | 'degraded' | 'unhealthy' =
      sqlite || redisErr ? 'unhealthy' : reasons.length ? 'degraded' : 'healthy';
    return {
      status,
      reasons,
      notes,
      checks: {
        redis: redisErr ?? 'ok',
        sqlite: sqlite ?? 'ok',
        workers: ws.sort((a, b) => a.id.localeCompare(b.id)),
        engines: engs,
        gpus: gpuList,
      },
    };
  };

  const tick = () => {
    const now = Date.now();
    rememberWorkers(now);
    let active: ReturnType<OpsRepo['list']>;
    try {
      active = repo.list({ active: true, limit: 1000 });
    } catch (err) {
      deps.log.warn({ err }, 'ops tick: reading batches failed');
      return;
    }
    for (const b of active) rates.record(b.id, b.completed + b.failed, now);
    rates.retain(new Set(active.map((b) => b.id)));
    if (events.listenerCount('batches') > 0) {
      const views = batchViews(active, now);
      const json = JSON.stringify(views);
      if (json !== lastBatches) {
        lastBatches = json;
        events.emit('batches', views);
      }
    }
    if (events.listenerCount('engines') > 0) {
      const es = engines(now);
      const json = JSON.stringify(es);
      if (json !== lastEngines) {
        lastEngines = json;
        events.emit('engines', es);
      }
    }
  };
  let timer: NodeJS.Timeout | undefined;
  let refreshing: NodeJS.Immediate | undefined;

  return {
    workers,
    engines,
    gpus,
    readGpus,
    isFresh,
    swaps,
    errors,
    demand,
    health,
    listBatches,
    getBatch,
    live,
    /** Last `tail` lines of an engine's output, then new ones, until `signal` aborts (log-stream.ts). */
    assertRedis,
    followLog: (opts: Parameters<typeof followEngineLog>[2]) => followEngineLog(redis, deps.prefix, opts),
    /** 'batches' / 'engines' with the new list, on change (checked every second). */
    events,
    /**
     * A batch changed status: look again now, not at the next tick. A batch whose whole life
     * fits between two ticks (a small batch on a ready engine) would otherwise never appear.
     */
    refreshSoon() {
      if (timer === undefined || refreshing) return;
      refreshing = setImmediate(() => {
        refreshing = undefined;
        tick();
      });
    },
    start() {
      tick();
      timer = setInterval(tick, TICK_MS);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
      if (refreshing) clearImmediate(refreshing);
      events.removeAllListeners();
    },
  };
}

function batchFailure(errorsJson: string | null): string {
  try {
    const errs = errorsJson
      ? (JSON.parse(errorsJson) as { code?: string; message?: string; line?: number | null }[])
      : [];
    const first = errs[0];
    if (!first) return 'batch failed';
    const more = errs.length > 1 ? ` (and ${errs.length - 1} more)` : '';
    return `batch failed: ${first.code ?? 'error'}${first.line ? ` at line ${first.line}` : ''}: ${(first.message ?? '').slice(0, 300)}${more}`;
  } catch {
    return 'batch failed';
  }
}

/** `code: message` of a stored error line (an output line with a non-2xx response, or an error-file line). */
function requestFailure(line: string | undefined): string | null {
  if (!line) return null;
  try {
    const l = JSON.parse(line) as {
      error?: { code?: string; message?: string } | null;
      response?: { status_code?: number; body?: { error?: { code?: string; message?: string } } } | null;
    };
    const e = l.error ?? l.response?.body?.error;
    const status = l.response?.status_code;
    if (!e) return status ? `status ${status}` : null;
    return `${e.code ?? (status ? `status ${status}` : 'error')}: ${(e.message ?? '').slice(0, 300)}`;
  } catch {
    return null;
  }
}
