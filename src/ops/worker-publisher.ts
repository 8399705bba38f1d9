import type { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import type { EngineInfo, SwapEvent } from '../engines/types.js';
import { queryGpus, type GpuQuery } from '../engines/gpu.js';
import { engineOutput } from '../engines/output-log.js';
import { keys, STREAM_CAPS, type OpsErrorMessage, type SwapMessage, type WorkerGpus } from '../queue/jobs.js';

/** What the publisher needs of the ModelManager. */
export interface EngineEvents {
  list(): Pick<EngineInfo, 'model' | 'logFile'>[];
  on(event: 'state', listener: (info: EngineInfo) => void): unknown;
  on(event: 'swap', listener: (swap: SwapEvent) => void): unknown;
  off(event: 'state', listener: (info: EngineInfo) => void): unknown;
  off(event: 'swap', listener: (swap: SwapEvent) => void): unknown;
}

export interface OpsPublisherDeps {
  /** A connection of its own (never a blocking or subscribed one). */
  redis: Redis;
  prefix: string;
  workerId: string;
  engines: EngineEvents;
  log: Logger;
  /** GPU_POLL_MS. */
  gpuPollMs: number;
  /** @defaultValue 'nvidia-smi' (found on PATH) */
  nvidiaSmi?: string;
  /** @defaultValue queryGpus of engines/gpu.ts */
  queryGpus?: (command: string, timeoutMs: number) => Promise<GpuQuery>;
}

const GPUS_REFRESH_MS = 5_000;
const GPUS_TTL_MS = 15_000;
const LOG_FLUSH_MS = 200;
/** Lines kept while Redis does not answer; older ones are dropped first. */
const LOG_BUFFER_MAX = 5_000;

/**
 * The worker's side of the operator API. Everything an operator sees of a worker's machine
 * (GPU readings, swaps, engine failures, engine output) is published to Redis here, since
 * workers reach the control plane only through Redis:
 * - GPUs: nvidia-smi every gpuPollMs, only if it exists (a missing binary stops the polling);
 *   each reading keeps the time it was taken, and a hung or failing nvidia-smi leaves the old
 *   readings in place with their old time, so readers see them go stale instead of live.
 * - swaps and engine failures/restarts: capped streams.
 * - engine output lines: one capped stream per engine, flushed in pipelines every 200 ms.
 * Redis being down never blocks the worker: writes fail quietly and lines are dropped past a cap.
 */
export function startOpsPublisher(deps: OpsPublisherDeps): { close(): Promise<void> } {
  const k = keys(deps.prefix);
  const { redis, workerId, log } = deps;
  const nvidiaSmi = deps.nvidiaSmi ?? 'nvidia-smi';
  const query = deps.queryGpus ?? ((cmd, timeoutMs) => queryGpus(cmd, timeoutMs));
  let closed = false;
  const gpus: WorkerGpus = { workerId, present: true, pollMs: deps.gpuPollMs, readAt: null, error: null, gpus: [] };

  const writeGpus = () =>
    redis
      .set(k.gpus(workerId), JSON.stringify(gpus), 'PX', Math.max(GPUS_TTL_MS, 3 * deps.gpuPollMs))
      .catch(() => undefined);

  let pollTimer: NodeJS.Timeout | undefined;
  const poll = async () => {
    if (closed) return;
    const res = await query(nvidiaSmi, Math.min(10_000, Math.max(1_000, 2 * deps.gpuPollMs)));
    if (closed) return;
    if (res.ok) {
      gpus.gpus = res.gpus.map((g) => ({
        index: g.index,
        uuid: g.uuid,
        name: g.name,
        memoryTotalMiB: g.memoryTotalMiB,
        memoryUsedMiB: g.memoryUsedMiB,
        utilizationPct: g.utilizationPct,
        temperatureC: g.temperatureC,
        at: g.at,
      }));
      gpus.readAt = Date.now();
      gpus.error = null;
    } else if (/ not found/.test(res.reason) && gpus.readAt === null) {
      gpus.present = false;
      gpus.error = null;
      log.info({ nvidiaSmi }, 'no nvidia-smi on this machine: no GPU readings');
      await writeGpus();
      return; // nothing to poll
    } else {
      if (gpus.error !== res.reason) log.warn({ reason: res.reason }, 'reading the GPUs failed');
      gpus.error = res.reason; // old readings stay with their old time: readers see them go stale
    }
    await writeGpus();
    pollTimer = setTimeout(() => void poll(), deps.gpuPollMs);
  };

  const addError = (e: Omit<OpsErrorMessage, 'workerId' | 'at'>) => {
    const msg: OpsErrorMessage = { at: Date.now(), workerId, ...e, message: e.message.slice(0, 2000) };
    void redis
      .xadd(k.opsErrors, 'MAXLEN', '~', STREAM_CAPS.errors, '*', 'm', JSON.stringify(msg))
      .catch(() => undefined);
  };
  const onSwap = (s: SwapEvent) => {
    const msg: SwapMessage = { workerId, from: s.from, to: s.to, reason: s.reason, durationMs: s.ms, at: Date.now() };
    void redis.xadd(k.swaps, 'MAXLEN', '~', STREAM_CAPS.swaps, '*', 'm', JSON.stringify(msg)).catch(() => undefined);
    if (s.reason === 'restart')
      addError({
        source: 'engine',
        model: s.to,
        message: `engine for model ${s.to} was restarted after a failure (ready after ${s.ms} ms)`,
      });
  };
  const onState = (info: EngineInfo) => {
    if (info.state === 'failed')
      addError({
        source: 'engine',
        model: info.model,
        message: info.lastError ?? `engine for model ${info.model} failed`,
      });
  };

  // Engine output: the manager's log files map to models.
  const modelOfFile = new Map(deps.engines.list().map((e) => [e.logFile, e.model]));
  let pending: { model: string; at: number; line: string }[] = [];
  const onLine = (file: string, line: string, at: number) => {
    const model = modelOfFile.get(file);
    if (model === undefined || closed) return;
    pending.push({ model, at, line });
    if (pending.length > LOG_BUFFER_MAX) pending.splice(0, pending.length - LOG_BUFFER_MAX);
  };
  let flushing: Promise<unknown> | undefined;
  const flushLines = async () => {
    if (flushing || pending.length === 0) return;
    const lines = pending;
    pending = [];
    const m = redis.pipeline();
    for (const l of lines)
      m.xadd(k.engineLog(workerId, l.model), 'MAXLEN', '~', STREAM_CAPS.engineLog, '*', 't', String(l.at), 'l', l.line);
    flushing = m
      .exec()
      .catch(() => undefined)
      .finally(() => (flushing = undefined));
    await flushing;
  };

  deps.engines.on('swap', onSwap);
  deps.engines.on('state', onState);
  engineOutput.on('line', onLine);
  void poll();
  const timers = [
    setInterval(() => void writeGpus(), GPUS_REFRESH_MS),
    setInterval(() => void flushLines(), LOG_FLUSH_MS),
  ];

  return {
    async close() {
      closed = true;
      timers.forEach(clearInterval);
      clearTimeout(pollTimer);
      deps.engines.off('swap', onSwap);
      deps.engines.off('state', onState);
      engineOutput.off('line', onLine);
      await flushing;
      await flushLines();
      await redis.del(k.gpus(workerId)).catch(() => undefined);
    },
  };
}
