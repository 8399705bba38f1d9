/**
 * One request of the inference proxy to one engine, on undici's dispatch API: the response
 * is either collected (non-streaming, and any answer >= 400) or, for a 2xx/3xx answer to a
 * streaming request, written through to the client chunk by chunk as it arrives, pausing the
 * upstream socket while the client's socket is full (backpressure).
 *
 * `done` resolves with the collected response, or with null once a stream has been passed on
 * (completely, cut short by the engine with an SSE error event, or abandoned by the client);
 * it rejects when no response came (connection refused/reset, aborted): the caller decides
 * about retries. The target is released exactly once, when the call is over.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import type { EngineRouter, EngineTarget } from './router-types.js';
import { describeFailure, isConnectionError, sseErrorEvent } from './upstream.js';

/**
 * Response header on every answer that came from an engine: milliseconds (3 decimals) this
 * server spent on the request before handing the response headers over for sending, minus
 * the time spent waiting on engines (see formatOverhead).
 */
export const OVERHEAD_HEADER = 'x-batchwright-overhead-ms';

/** Thrown internally when the client went away: nothing is sent. */
export class ClientGone extends Error {
  override name = 'ClientGone';
}

/** What one proxied request shares across its upstream attempts. */
export interface Exchange {
  router: EngineRouter;
  req: FastifyRequest;
  reply: FastifyReply;
  /** Upstream path, e.g. /v1/chat/completions. */
  path: string;
  /** The exact request bytes. */
  body: Buffer;
  stream: boolean;
  /** Summed time of upstream attempts: request start → response complete (collected), response headers (streamed) or failure. */
  upstreamMs: number;
  /** performance.now() when the route handler started. */
  handlerStart: number;
}

/**
 * The value of OVERHEAD_HEADER now: time since the request started minus time waiting on
 * engines. It includes acquiring an engine (so a request that waited for a model to load
 * shows that wait), reading the request body, parsing and checks, and our part of the
 * upstream exchange; it cannot include what happens after the headers go out.
 */
export function formatOverhead(ex: Exchange): string {
  // Fastify's clock starts when it begins routing the request (before the body is read); an
  // app without a logger or onResponse hook does not keep it, and the handler's start stands in.
  const elapsed = ex.reply.elapsedTime || performance.now() - ex.handlerStart;
  const ms = elapsed - ex.upstreamMs;
  return (ms > 0 ? ms : 0).toFixed(3);
}

export interface Collected {
  status: number;
  body: Buffer;
  retryAfter: string | null;
}

const SSE_TYPE = 'text/event-stream; charset=utf-8';

export class UpstreamCall implements Dispatcher.DispatchHandler {
  readonly done: Promise<Collected | null>;
  private resolve!: (r: Collected | null) => void;
  private reject!: (e: unknown) => void;
  private controller: Dispatcher.DispatchController | null = null;
  private abortReason: Error | null = null;
  private released = false;
  private readonly started = performance.now();
  // collected response
  private status = 0;
  private retryAfter: string | null = null;
  private parts: Buffer[] | null = null;
  // streamed response
  private streaming = false;
  private waitingDrain = false;

  constructor(
    private readonly ex: Exchange,
    private readonly target: EngineTarget,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    target.dispatcher.dispatch(
      {
        path: ex.path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': ex.req.id },
        body: ex.body,
      },
      this,
    );
  }

  /** Aborts the upstream request (the client went away). */
  abort(reason: Error): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason) controller.abort(this.abortReason);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // 1xx: informational, the real answer follows
    this.status = statusCode;
    if (this.ex.stream && statusCode < 400) return this.startStream(controller, statusCode, headers);
    this.parts = [];
    const retryAfter = headers['retry-after'];
    this.retryAfter = typeof retryAfter === 'string' ? retryAfter : null;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.streaming) {
      this.parts?.push(chunk);
      return;
    }
    const out = this.ex.reply.raw;
    if (!out.write(chunk) && !this.waitingDrain) {
      // The client's socket is full: stop reading the engine until it drains. A client that
      // leaves instead aborts the call (its 'close' handler), which ends the wait.
      this.waitingDrain = true;
      controller.pause();
      out.once('drain', () => {
        this.waitingDrain = false;
        controller.resume();
      });
    }
  }

  onResponseEnd(): void {
    if (this.streaming) {
      this.ex.reply.raw.end();
      this.finish();
      this.resolve(null);
      return;
    }
    this.ex.upstreamMs += performance.now() - this.started;
    const parts = this.parts ?? [];
    const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    this.finish();
    this.resolve({ status: this.status, body, retryAfter: this.retryAfter });
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (!this.streaming) {
      this.ex.upstreamMs += performance.now() - this.started;
      this.finish();
      this.reject(err);
      return;
    }
    const { req, reply, router } = this.ex;
    const out = reply.raw;
    const target = this.target;
    try {
      if (this.abortReason || out.destroyed) return; // the client left; the upstream request is aborted
      req.log.warn({ err, model: target.model, engine: target.baseUrl }, 'engine stream failed');
      if (isConnectionError(err)) router.reportFailure(target);
      const envelope = {
        error: {
          message: `The engine for model ${target.model} stopped mid-stream (${describeFailure(err)}); the answer is incomplete. Retry the request.`,
          type: 'server_error',
          param: null,
          code: 'service_unavailable',
        },
      };
      out.end(sseErrorEvent(envelope));
    } finally {
      this.finish();
      this.resolve(null);
    }
  }

  /** A streaming answer: the headers go to the client now, then every chunk as it comes. */
  private startStream(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    const { reply, req } = this.ex;
    this.ex.upstreamMs += performance.now() - this.started;
    this.streaming = true;
    reply.hijack();
    const out = reply.raw;
    if (out.destroyed) {
      controller.abort(this.abortReason ?? new ClientGone('client disconnected'));
      return;
    }
    const upstreamType = headers['content-type'];
    out.writeHead(statusCode, {
      'content-type':
        typeof upstreamType === 'string' && upstreamType.includes('event-stream') ? upstreamType : SSE_TYPE,
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      'x-request-id': req.id,
      [OVERHEAD_HEADER]: formatOverhead(this.ex),
    });
    out.flushHeaders();
  }

  private finish(): void {
    if (this.released) return;
    this.released = true;
    this.target.release();
  }
}
