/**
 * A cheap HTTP client for benchmarks, on undici's raw dispatch API (no streams, no promises
 * per chunk): one request's timings to the microsecond, and closed-loop load with N requests
 * in flight. Pass a keep-alive undici Pool or Agent.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { summarize, type Summary } from './stats.js';

export interface Timed {
  status: number;
  headers: IncomingHttpHeaders;
  /** Request start → response complete (ms). */
  totalMs: number;
  /** Request start → response headers (ms). */
  headersMs: number;
  /** Request start → first body byte (ms); NaN when the body was empty. */
  firstByteMs: number;
  bytes: number;
  /** Arrival time (ms since request start) of every body chunk, when asked for. */
  chunkMs?: number[];
  /** The body, when asked for. */
  body?: Buffer;
}

export interface PostOptions {
  headers?: Record<string, string>;
  /** Record when each body chunk arrives. */
  chunks?: boolean;
  /** Keep the response body. */
  keepBody?: boolean;
  signal?: AbortSignal;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/** POSTs `body` to `path` on `dispatcher` (a Pool/Client bound to an origin, or an Agent with origin set in path's URL). */
export function timedPost(
  dispatcher: Dispatcher,
  path: string,
  body: Buffer | string,
  opts: PostOptions = {},
): Promise<Timed> {
  return timedRequest(dispatcher, { path, method: 'POST', body, headers: opts.headers ?? JSON_HEADERS }, opts);
}

export function timedRequest(
  dispatcher: Dispatcher,
  req: Dispatcher.DispatchOptions,
  opts: PostOptions = {},
): Promise<Timed> {
  return new Promise<Timed>((resolve, reject) => {
    const t0 = performance.now();
    const r: Timed = { status: 0, headers: {}, totalMs: 0, headersMs: 0, firstByteMs: Number.NaN, bytes: 0 };
    const chunkMs: number[] | undefined = opts.chunks ? [] : undefined;
    if (chunkMs) r.chunkMs = chunkMs;
    const parts: Buffer[] | undefined = opts.keepBody ? [] : undefined;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(controller) {
        if (opts.signal) {
          // An AbortSignal's reason is `any`: an Error (its default, or what our callers pass).
          if (opts.signal.aborted) controller.abort(opts.signal.reason as Error);
          else
            opts.signal.addEventListener('abort', () => controller.abort(opts.signal!.reason as Error), { once: true });
        }
      },
      onResponseStart(_c, statusCode, headers) {
        r.headersMs = performance.now() - t0;
        r.status = statusCode;
        r.headers = headers;
      },
      onResponseData(_c, chunk) {
        const t = performance.now() - t0;
        if (r.bytes === 0) r.firstByteMs = t;
        r.bytes += chunk.length;
        chunkMs?.push(t);
        parts?.push(chunk);
      },
      onResponseEnd() {
        r.totalMs = performance.now() - t0;
        if (parts) r.body = Buffer.concat(parts);
        resolve(r);
      },
      onResponseError(_c, err) {
        reject(err);
      },
    };
    dispatcher.dispatch(req, handler);
  });
}

export interface LoadResult {
  concurrency: number;
  durationMs: number;
  completed: number;
  /** Non-2xx answers and transport errors. */
  errors: number;
  reqPerSec: number;
  latencyMs: Summary;
  firstError?: string;
}

/**
 * Closed-loop load: `concurrency` loops, each sending its next request when the previous one
 * completes, for `durationMs`. Requests still in flight at the end are awaited, not counted.
 */
export async function closedLoop(
  dispatcher: Dispatcher,
  opts: {
    concurrency: number;
    durationMs: number;
    path: string;
    body: Buffer | string;
    headers?: Record<string, string>;
  },
): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const end = t0 + opts.durationMs;
  let completed = 0;
  let lastDone = t0;
  const loop = async () => {
    while (performance.now() < end) {
      try {
        const r = await timedPost(dispatcher, opts.path, opts.body, { headers: opts.headers });
        const now = performance.now();
        if (now <= end) {
          if (r.status >= 200 && r.status < 300) {
            completed++;
            latencies.push(r.totalMs);
          } else {
            errors++;
            firstError ??= `HTTP ${r.status}`;
          }
          lastDone = now;
        }
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, loop));
  const elapsed = Math.max(1, lastDone - t0);
  return {
    concurrency: opts.concurrency,
    durationMs: elapsed,
    completed,
    errors,
    reqPerSec: (completed * 1000) / elapsed,
    latencyMs: summarize(latencies),
    ...(firstError ? { firstError } : {}),
  };
}
