import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import type { EngineRouter as ProxyRouter, EngineTarget } from '../api/proxy/router-types.js';
import type { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import { ApiError } from '../api/errors.js';
import { keys, type DemandRecord, type WorkerHeartbeat } from '../queue/jobs.js';
import { readJsonKeys } from '../queue/connection.js';

export type { EngineTarget };

/** The proxy's view of the router (api/proxy/router-types.ts), plus what the API process needs. */
export interface EngineRouter extends ProxyRouter {
  /** What workers advertise now (for /v1/models states). */
  heartbeats(): WorkerHeartbeat[];
  close(): Promise<void>;
}

export interface EngineRouterDeps {
  redis: Redis;
  /** A dedicated connection: a subscribed ioredis client can issue no other command. */
  subscriber: Redis;
  prefix: string;
  models: readonly string[];
  log: Logger;
  /** How long a request waits for its model to become ready (a vLLM cold start takes minutes). */
  waitMs: number;
}

const REFRESH_MS = 1_000;
const DEMAND_TTL_MS = 5_000;
/**
 * In-flight changes (a request starting on an idle model, the last one finishing) reach Redis
 * at most once per this window (the first within a millisecond): workers read demand every
 * 100 ms, and a write per request cost a Redis round trip per request at high rates.
 */
const DEMAND_FLUSH_MS = 20;
/** Without any live worker that serves the model, give up sooner than waitMs. */
const NO_WORKER_WAIT_MS = 15_000;

interface Demand extends DemandRecord {
  dirty: boolean;
}

/**
 * Routes interactive requests to engines that workers advertise in Redis, balancing by this
 * API process's in-flight count. A request for a model nobody has loaded registers demand
 * (a Redis key workers read on every scheduling round) and waits until some worker reports
 * the model ready: requests are held, not failed, during a swap, and concurrent requests for
 * one model share that one load.
 */
export function createEngineRouter(deps: EngineRouterDeps): EngineRouter {
  const k = keys(deps.prefix);
  const apiId = randomBytes(6).toString('hex');
  const known = new Set(deps.models);
  let workers = new Map<string, WorkerHeartbeat>();
  const inflight = new Map<string, number>();
  const pools = new Map<string, Pool>();
  const failed = new Map<string, number>(); // baseUrl → heartbeat time at which it failed
  const demand = new Map<string, Demand>();
  const waiters = new Set<() => void>();

  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const refresh = async () => {
    const next = new Map<string, WorkerHeartbeat>();
    for (const hb of await readJsonKeys<WorkerHeartbeat>(deps.redis, k.workersPattern, 200)) next.set(hb.workerId, hb);
    workers = next;
    notify();
  };

  // k.demand hashes the model id: compute each key once.
  const demandKeys = new Map<string, string>();
  const demandKey = (model: string): string => {
    let key = demandKeys.get(model);
    if (key === undefined) demandKeys.set(model, (key = k.demand(model, apiId)));
    return key;
  };

  const writeDemand = async () => {
    const m = deps.redis.multi();
    let any = false;
    for (const d of demand.values()) {
      const key = demandKey(d.model);
      if (d.waiting === 0 && d.inflight === 0) {
        if (d.dirty) {
          m.del(key);
          any = true;
        }
        demand.delete(d.model);
        continue;
      }
      const rec: DemandRecord = {
        model: d.model,
        waiting: d.waiting,
        inflight: d.inflight,
        waitingSince: d.waitingSince,
      };
      m.set(key, JSON.stringify(rec), 'PX', DEMAND_TTL_MS);
      any = true;
      d.dirty = false;
    }
    if (any) await m.exec();
  };

  // At most one write per DEMAND_FLUSH_MS, with the state of then; the first after a quiet
  // spell goes out within a millisecond. Never inline: acquire/release sit on a request's path.
  let flushTimer: NodeJS.Timeout | undefined;
  let lastFlush = 0;
  const flush = () => {
    flushTimer = undefined;
    lastFlush = Date.now();
    void writeDemand().catch(() => undefined);
  };
  const flushSoon = () => {
    if (flushTimer) return;
    flushTimer = setTimeout(flush, Math.max(1, lastFlush + DEMAND_FLUSH_MS - Date.now()));
    flushTimer.unref();
  };

  const demandOf = (model: string): Demand => {
    let d = demand.get(model);
    if (!d) {
      d = { model, waiting: 0, inflight: 0, waitingSince: null, dirty: true };
      demand.set(model, d);
    }
    return d;
  };

  const timer = setInterval(() => {
    void refresh().catch((err) => deps.log.warn({ err }, 'reading worker heartbeats failed'));
    void writeDemand().catch((err) => deps.log.warn({ err }, 'writing demand failed'));
  }, REFRESH_MS);
  timer.unref();
  void deps.subscriber
    .subscribe(k.events)
    .catch((err) => deps.log.warn({ err }, 'subscribing to worker events failed'));
  deps.subscriber.on('message', (_channel, message) => {
    if (message === 'engines') void refresh().catch(() => undefined);
  });
  void refresh().catch(() => undefined);

  const poolFor = (baseUrl: string): Pool => {
    let p = pools.get(baseUrl);
    if (!p) {
      p = new Pool(baseUrl, { connections: 256, keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0 });
      pools.set(baseUrl, p);
    }
    return p;
  };

  /** A ready engine of the model with the fewest of our requests in flight. */
  const pick = (model: string): { baseUrl: string; workerId: string } | undefined => {
    let best: { baseUrl: string; workerId: string; load: number } | undefined;
    for (const hb of workers.values()) {
      for (const e of hb.engines) {
        if (e.model !== model || e.state !== 'ready' || !e.baseUrl) continue;
        const failedAt = failed.get(e.baseUrl);
        if (failedAt !== undefined && failedAt >= e.since) continue;
        const load = inflight.get(e.baseUrl) ?? 0;
        if (!best || load < best.load) best = { baseUrl: e.baseUrl, workerId: hb.workerId, load };
      }
    }
    return best;
  };

  const servedBySomeone = (model: string) => [...workers.values()].some((hb) => hb.models.includes(model));
  const lastErrorOf = (model: string) =>
    [...workers.values()].flatMap((hb) => hb.engines).find((e) => e.model === model && e.lastError)?.lastError ?? null;

  const waitForChange = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });

  return {
    isKnownModel: (model) => known.has(model),
    heartbeats: () => [...workers.values()],

    async acquire(model, signal) {
      const started = Date.now();
      const d = demandOf(model);
      let counted = false;
      let found = pick(model);
      if (!found) {
        d.waiting += 1;
        d.waitingSince ??= started;
        d.dirty = true;
        counted = true;
        await writeDemand().catch(() => undefined);
        await deps.redis.publish(k.events, 'demand').catch(() => undefined);
      }
      try {
        while (!found) {
          if (signal.aborted) throw signal.reason;
          const waited = Date.now() - started;
          const limit = servedBySomeone(model) ? deps.waitMs : Math.min(deps.waitMs, NO_WORKER_WAIT_MS);
          if (waited >= limit) {
            const last = lastErrorOf(model);
            const why = servedBySomeone(model)
              ? `Model ${model} did not become ready within ${Math.round(limit / 1000)} s${last ? ` (last engine error: ${last})` : ''}.`
              : `No worker serves model ${model}. Start a worker (npm run start:worker) whose WORKER_MODELS includes it.`;
            throw new ApiError('service_unavailable', `${why} Retry later.`, 'model', { 'retry-after': '10' });
          }
          await waitForChange(Math.min(250, limit - waited), signal);
          found = pick(model);
        }
      } finally {
        if (counted) {
          d.waiting -= 1;
          if (d.waiting === 0) d.waitingSince = null;
          d.dirty = true;
        }
      }
      const { baseUrl, workerId } = found;
      d.inflight += 1;
      d.dirty = true;
      if (d.inflight === 1) flushSoon();
      inflight.set(baseUrl, (inflight.get(baseUrl) ?? 0) + 1);
      let released = false;
      return {
        baseUrl,
        model,
        workerId,
        dispatcher: poolFor(baseUrl),
        release() {
          if (released) return;
          released = true;
          inflight.set(baseUrl, (inflight.get(baseUrl) ?? 1) - 1);
          d.inflight -= 1;
          d.dirty = true;
          if (d.inflight === 0 && d.waiting === 0) flushSoon();
        },
      };
    },

    reportFailure(target) {
      failed.set(target.baseUrl, Date.now());
      void refresh().catch(() => undefined);
    },

    async close() {
      clearInterval(timer);
      clearTimeout(flushTimer);
      for (const d of demand.values()) {
        d.waiting = 0;
        d.inflight = 0;
      }
      await writeDemand().catch(() => undefined);
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => undefined)));
      deps.subscriber.disconnect();
    },
  };
}
