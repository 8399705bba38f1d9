import { Pool, type Dispatcher } from 'undici';
import { EngineError } from './errors.js';

export { classifyFailure, type FailureClass } from './failures.js';

export interface EngineClientOptions {
  /** Model id, for error messages. */
  model: string;
  /** Sockets to the engine: its concurrency, so every sequence it can run has one. */
  connections: number;
  /**
   * Time to the response headers. A non-streaming completion sends its headers only when the
   * whole answer is generated, so this is a generation deadline. @defaultValue 600_000
   */
  headersTimeoutMs?: number;
  /** Longest gap between body chunks. @defaultValue 600_000 */
  bodyTimeoutMs?: number;
  /** Idle keep-alive sockets are closed after this. @defaultValue 10_000 */
  keepAliveTimeoutMs?: number;
}

export interface EngineRequestOptions {
  /** The caller's cancellation: an abort rejects with signal.reason, unwrapped. */
  signal?: AbortSignal;
  /** Whole-request deadline; expiry rejects with ENGINE_REQUEST_FAILED (classified 'retry'). */
  timeoutMs?: number;
  headers?: Record<string, string>;
}

export interface EngineResponse {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: Buffer;
}

export type EngineRequestBody = Buffer | string | object;

/** HTTP to one engine over a keep-alive undici Pool. Owned by the ModelManager, closed on stop. */
export class EngineClient {
  readonly baseUrl: string;
  private readonly model: string;
  private readonly pool: Pool;

  constructor(baseUrl: string, opts: EngineClientOptions) {
    this.baseUrl = baseUrl;
    this.model = opts.model;
    this.pool = new Pool(baseUrl, {
      connections: Math.max(1, opts.connections),
      pipelining: 1,
      headersTimeout: opts.headersTimeoutMs ?? 600_000,
      bodyTimeout: opts.bodyTimeoutMs ?? 600_000,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 10_000,
    });
  }

  /** A non-streaming POST; any HTTP status resolves (see classifyFailure / toOpenAIErrorBody). */
  async post(path: string, body: EngineRequestBody, opts: EngineRequestOptions = {}): Promise<EngineResponse> {
    try {
      const res = await this.send('POST', path, body, opts);
      const buf = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, headers: res.headers, body: buf };
    } catch (err) {
      throw this.wrap(err, path, opts.signal);
    }
  }

  /** A POST whose body the caller consumes (SSE passthrough). The caller must read or dump the body. */
  async stream(
    path: string,
    body: EngineRequestBody,
    opts: EngineRequestOptions = {},
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await this.send('POST', path, body, opts);
    } catch (err) {
      throw this.wrap(err, path, opts.signal);
    }
  }

  /** A GET, e.g. /v1/models or /metrics. */
  async get(path: string, opts: EngineRequestOptions = {}): Promise<EngineResponse> {
    try {
      const res = await this.send('GET', path, undefined, opts);
      return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
    } catch (err) {
      throw this.wrap(err, path, opts.signal);
    }
  }

  /** Lets requests in flight finish, then closes the sockets. */
  async close(): Promise<void> {
    if (!this.pool.closed && !this.pool.destroyed) await this.pool.close();
  }

  /** Fails requests in flight at once (the engine is gone anyway). */
  async destroy(): Promise<void> {
    if (!this.pool.destroyed) await this.pool.destroy();
  }

  private send(method: 'GET' | 'POST', path: string, body: EngineRequestBody | undefined, opts: EngineRequestOptions) {
    const signals = [
      opts.signal,
      opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs),
    ].filter((s) => s !== undefined);
    const payload =
      body === undefined || typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const headers: Record<string, string> = {
      ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
      ...opts.headers,
    };
    return this.pool.request({
      method,
      path,
      headers,
      body: payload,
      signal: signals.length > 1 ? AbortSignal.any(signals) : signals[0],
    });
  }

  private wrap(err: unknown, path: string, callerSignal: AbortSignal | undefined): unknown {
    if (callerSignal?.aborted) return callerSignal.reason; // the caller's own cancellation
    const what = (err as { code?: string; name?: string }).code ?? (err as { name?: string }).name ?? 'error';
    return new EngineError(
      'ENGINE_REQUEST_FAILED',
      `request ${path} to the engine for model ${this.model} failed (${what}: ${(err as Error).message}) — the engine may have crashed or be overloaded; retry`,
      { model: this.model },
      { cause: err },
    );
  }
}
