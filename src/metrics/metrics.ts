import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BATCH_STATUSES } from '../domain/batch-status.js';
import type { Logger } from '../log/logger.js';
import type { OpsService } from '../ops/ops-service.js';
import { keys, type SwapMessage } from '../queue/jobs.js';
import type { OpsRepo } from '../store/ops-repo.js';

export interface MetricsDeps {
  redis: Redis;
  prefix: string;
  repo: OpsRepo;
  ops: OpsService;
  log: Logger;
}

export type Metrics = ReturnType<typeof createMetrics>;

const ENGINE_STATES = ['stopped', 'starting', 'ready', 'sleeping', 'stopping', 'failed', 'shutdown'] as const;
const MIB = 1024 * 1024;

/**
 * Prometheus metrics on a Registry of our own (never prom-client's global one, so two apps
 * in one process — tests — do not share series). Everything but the HTTP histogram is read
 * at scrape time: batches and tokens from SQLite, engines, workers and GPUs from what workers
 * publish in Redis. GPU series are rebuilt on every scrape from fresh readings only, so a GPU
 * whose readings went stale (or a worker that died) has no series at all rather than old values.
 */
export function createMetrics(deps: MetricsDeps) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'batchwright_process_' });
  const k = keys(deps.prefix);

  // One snapshot of Redis-side state per scrape, shared by the collect() functions below.
  let snap: Promise<Snapshot> | undefined;
  let snapAt = 0;
  const snapshot = (): Promise<Snapshot> => {
    if (!snap || Date.now() - snapAt > 250) {
      snapAt = Date.now();
      snap = takeSnapshot().catch((err) => {
        deps.log.warn({ err }, 'metrics: reading Redis failed');
        return { demand: new Map(), gpus: [], ok: false };
      });
    }
    return snap;
  };
  type Snapshot = {
    demand: Map<string, { waiting: number; inflight: number }>;
    gpus: Awaited<ReturnType<OpsService['gpus']>>;
    ok: boolean;
  };
  const takeSnapshot = async (): Promise<Snapshot> => {
    await readSwaps();
    return { demand: await deps.ops.demand(), gpus: await deps.ops.gpus(), ok: true };
  };

  const http = new Histogram({
    name: 'batchwright_http_request_duration_seconds',
    help: 'HTTP request latency by route pattern, method and status.',
    labelNames: ['method', 'route', 'status_code'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });

  new Gauge({
    name: 'batchwright_batches',
    help: 'Batches by status (from SQLite at scrape time).',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of BATCH_STATUSES) this.set({ status: s }, 0);
      for (const r of deps.repo.statusCounts()) this.set({ status: r.status }, r.n);
    },
  });

  const queued = new Gauge({
    name: 'batchwright_requests_queued',
    help: 'Requests waiting per model: kind="batch" not yet sent to a worker, kind="interactive" waiting for the model to load.',
    labelNames: ['model', 'kind'],
    registers: [registry],
    async collect() {
      await requestsOnce();
    },
  });
  const inFlight = new Gauge({
    name: 'batchwright_requests_in_flight',
    help: 'Requests in flight per model: kind="batch" sent to workers (in chunks), kind="interactive" on an engine.',
    labelNames: ['model', 'kind'],
    registers: [registry],
    async collect() {
      await requestsOnce();
    },
  });
  // The registry collects metrics concurrently: both gauges wait on one fill per scrape.
  let requestsP: Promise<void> | undefined;
  let requestsAt = 0;
  const requestsOnce = () => {
    if (!requestsP || Date.now() - requestsAt > 250) {
      requestsAt = Date.now();
      requestsP = collectRequests();
    }
    return requestsP;
  };
  const collectRequests = async () => {
    queued.reset();
    inFlight.reset();
    for (const r of deps.repo.openRequests()) {
      if (r.state === 'pending') queued.inc({ model: r.model, kind: 'batch' }, r.n);
      else inFlight.inc({ model: r.model, kind: 'batch' }, r.n);
    }
    for (const [model, d] of (await snapshot()).demand) {
      queued.set({ model, kind: 'interactive' }, d.waiting);
      inFlight.set({ model, kind: 'interactive' }, d.inflight);
    }
  };

  // Token totals are sums kept in SQLite as results are stored: exported as counters.
  new Counter({
    name: 'batchwright_tokens_input_total',
    help: 'Prompt tokens of stored batch results, per model.',
    labelNames: ['model'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of deps.repo.tokenTotals()) this.inc({ model: r.model }, r.input ?? 0);
    },
  });
  new Counter({
    name: 'batchwright_tokens_output_total',
    help: 'Completion tokens of stored batch results, per model.',
    labelNames: ['model'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of deps.repo.tokenTotals()) this.inc({ model: r.model }, r.output ?? 0);
    },
  });

  new Counter({
    name: 'batchwright_batch_requests_total',
    help: 'Batch requests with a stored result, per model and outcome (completed: 2xx, failed: anything else).',
    labelNames: ['model', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of deps.repo.tokenTotals()) {
        this.inc({ model: r.model, outcome: 'completed' }, r.completed ?? 0);
        this.inc({ model: r.model, outcome: 'failed' }, r.failed ?? 0);
      }
    },
  });

  new Gauge({
    name: 'batchwright_engine_state',
    help: 'Engine state per live worker and model: 1 for the current state, 0 for the others.',
    labelNames: ['worker', 'model', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of deps.ops.engines())
        for (const s of ENGINE_STATES)
          this.set({ worker: e.worker_id, model: e.model, state: s }, e.state === s ? 1 : 0);
    },
  });
  new Counter({
    name: 'batchwright_engine_restarts_total',
    help: 'Engine restarts after a failure, per live worker and model (as counted by the worker).',
    labelNames: ['worker', 'model'],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of deps.ops.engines()) this.inc({ worker: e.worker_id, model: e.model }, e.restarts);
    },
  });

  const swapsTotal = new Counter({
    name: 'batchwright_engine_swaps_total',
    help: 'Engine swaps (cold starts, restarts, evictions, wake-ups) seen by this API process since it started.',
    labelNames: ['worker', 'reason'],
    registers: [registry],
    async collect() {
      await snapshot();
    },
  });
  const swapSeconds = new Histogram({
    name: 'batchwright_engine_swap_duration_seconds',
    help: 'Time from a swap decision to the new engine being ready.',
    labelNames: ['worker', 'reason'],
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200],
    registers: [registry],
    async collect() {
      await snapshot();
    },
  });
  // The swaps stream is read from where it ended when this process started: counters count
  // what happened since (Prometheus handles the reset), and a restart does not count old swaps
  // again. Until start() reads the stream's last id, a time-based id stands in (stream ids are
  // Redis-clock milliseconds).
  let swapCursor = `${Date.now()}-0`;
  const readSwaps = async () => {
    deps.ops.assertRedis();
    const entries = (await deps.redis.xrange(k.swaps, `(${swapCursor}`, '+', 'COUNT', 1000)) as [string, string[]][];
    for (const [id, fields] of entries) {
      swapCursor = id;
      try {
        const s = JSON.parse(fields[1] ?? '') as SwapMessage;
        swapsTotal.inc({ worker: s.workerId, reason: s.reason });
        swapSeconds.observe({ worker: s.workerId, reason: s.reason }, s.durationMs / 1000);
      } catch {
        // skip
      }
    }
  };

  new Gauge({
    name: 'batchwright_worker_heartbeat_age_seconds',
    help: 'Seconds since each worker last sent a heartbeat (workers silent for over 5 minutes are dropped).',
    labelNames: ['worker'],
    registers: [registry],
    collect() {
      this.reset();
      for (const w of deps.ops.workers()) this.set({ worker: w.id }, w.age_s);
    },
  });
  new Gauge({
    name: 'batchwright_worker_up',
    help: '1 for a worker whose heartbeat is fresh, 0 for one that stopped sending them.',
    labelNames: ['worker'],
    registers: [registry],
    collect() {
      this.reset();
      for (const w of deps.ops.workers()) this.set({ worker: w.id }, w.alive ? 1 : 0);
    },
  });

  const gpuLabels = ['worker', 'gpu', 'name'] as const;
  const gpuGauge = (name: string, help: string, value: (g: Snapshot['gpus'][number]) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: gpuLabels,
      registers: [registry],
      async collect() {
        this.reset();
        for (const g of (await snapshot()).gpus) {
          const v = value(g);
          if (v !== null) this.set({ worker: g.worker_id, gpu: String(g.index), name: g.name }, v);
        }
      },
    });
  gpuGauge(
    'batchwright_gpu_utilization_percent',
    'GPU utilization (nvidia-smi utilization.gpu), fresh readings only.',
    (g) => g.utilization_pct,
  );
  gpuGauge(
    'batchwright_gpu_memory_used_bytes',
    'GPU memory used (nvidia-smi memory.used), fresh readings only.',
    (g) => g.memory_used_mib * MIB,
  );
  gpuGauge(
    'batchwright_gpu_memory_total_bytes',
    'GPU memory total (nvidia-smi memory.total), fresh readings only.',
    (g) => g.memory_total_mib * MIB,
  );
  gpuGauge(
    'batchwright_gpu_temperature_celsius',
    'GPU temperature (nvidia-smi temperature.gpu), fresh readings only.',
    (g) => g.temperature_c,
  );
  gpuGauge(
    'batchwright_gpu_reading_age_seconds',
    'Age of the GPU reading exported (readings older than 3× GPU_POLL_MS are not exported).',
    (g) => Math.max(0, Date.now() / 1000 - g.read_at),
  );

  return {
    registry,
    /** Starts the swap cursor at the stream's current end (when Redis is already connected). */
    async start() {
      if (deps.redis.status !== 'ready') return;
      const last = (await deps.redis.xrevrange(k.swaps, '+', '-', 'COUNT', 1).catch(() => [])) as [string, string[]][];
      if (last[0]) swapCursor = last[0][0];
    },
    observeHttp(method: string, route: string, status: number, seconds: number) {
      http.observe({ method, route, status_code: String(status) }, seconds);
    },
  };
}
