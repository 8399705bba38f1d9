/**
 * Interactive inference: POST /v1/chat/completions, /v1/completions, /v1/embeddings,
 * proxied to a ready engine (vLLM or the simulator) chosen by the engine router.
 *
 * The request body goes upstream byte for byte (multimodal parts, tools, response_format,
 * engine-specific extras); only `model` is read. Streams are written to the client as each
 * piece arrives, with backpressure; a client that goes away aborts the upstream request, which
 * frees the engine's slot. Every acquired target is released exactly once.
 *
 * The upstream request runs on undici's dispatch API (src/api/proxy/upstream-call.ts): no
 * body stream or abort-signal listener per request, no promise per chunk.
 *
 * Every answer that came from an engine carries `x-batchwright-overhead-ms` (see
 * docs/performance-proxy.md): the time this server spent on the request before sending the
 * response headers, minus the time spent waiting on engines.
 */
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { toOpenAIErrorBody } from '../../domain/engine-error-body.js';
import { ApiError } from '../errors.js';
import { useUtf8JsonParser } from '../json-body.js';
import type { EngineRouter } from '../proxy/router-types.js';
import { describeFailure, INFERENCE_PATHS, isConnectionError, checkBody } from '../proxy/upstream.js';
import { ClientGone, OVERHEAD_HEADER, formatOverhead, UpstreamCall, type Exchange } from '../proxy/upstream-call.js';

export { OVERHEAD_HEADER };

export interface InferenceRoutesOptions {
  /** The router to use; defaults to `app.deps.router`. */
  router?: EngineRouter;
}

/** Retry-After (seconds) on a 503 for an engine that stopped answering. */
const RETRY_AFTER_S = '5';

/**
 * The exact request bytes, kept by this plugin's JSON parser next to the parsed body: a
 * request decorator (a field every request of these routes has from the start, so no
 * per-request side table and no change of object shape).
 */
const RAW_BODY = Symbol('batchwright.rawBody');
type WithRawBody = FastifyRequest & { [RAW_BODY]: Buffer | null };

export default async function inferenceRoutes(app: FastifyInstance, opts: InferenceRoutesOptions) {
  const router = opts.router ?? (app.deps as { router?: EngineRouter } | undefined)?.router;
  if (!router) throw new Error('inference routes need an engine router (app.deps.router)');

  // Scoped to this plugin by encapsulation: replaces the JSON parser here only, keeping the
  // raw bytes for forwarding; parsing (and its errors) stay Fastify's own, after a UTF-8 check.
  app.decorateRequest(RAW_BODY, null);
  useUtf8JsonParser(app, (req, buf) => ((req as WithRawBody)[RAW_BODY] = buf));

  // Fastify's two lines per request ("incoming request", "request completed") are debug-level
  // here: at LOG_LEVEL=info they cost more CPU than the proxying itself at thousands of
  // requests per second. Warnings and errors of these routes are still logged; at debug and
  // trace the request lines appear as on every other route.
  const routeOpts = app.log.level === 'info' ? { logLevel: 'warn' as const } : {};

  for (const path of INFERENCE_PATHS) {
    const upstreamPath = `/v1${path}`;
    app.post(path, routeOpts, (req, reply) => proxy(router, upstreamPath, req, reply));
  }
}

async function proxy(
  router: EngineRouter,
  upstreamPath: string,
  req: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const t0 = performance.now();
  const checked = checkBody(req.body);
  if (!checked.ok) throw new ApiError(checked.code, checked.message, checked.param);
  const { model, stream } = checked;
  if (!router.isKnownModel(model)) {
    throw new ApiError(
      'model_not_found',
      `The model '${clip(model)}' does not exist on this server; see GET /v1/models for the models it serves.`,
      'model',
    );
  }
  const body = (req as WithRawBody)[RAW_BODY] ?? Buffer.from(JSON.stringify(req.body));

  const ex: Exchange = {
    router,
    req,
    reply,
    path: upstreamPath,
    body,
    stream,
    upstreamMs: 0,
    handlerStart: t0,
  };

  // Aborted when the client disconnects before its response is complete: the wait for an
  // engine (signal) or the upstream request in flight (call.abort).
  const ac = new AbortController();
  let call: UpstreamCall | undefined;
  const onClose = () => {
    if (reply.raw.writableFinished) return;
    const why = new ClientGone('client disconnected');
    ac.abort(why);
    call?.abort(why);
  };
  reply.raw.on('close', onClose);
  if (req.raw.socket?.destroyed) onClose();

  try {
    for (let attempt = 1; ; attempt++) {
      let target;
      try {
        target = await router.acquire(model, ac.signal);
      } catch (err) {
        if (ac.signal.aborted) return clientGone(reply);
        throw err;
      }
      call = new UpstreamCall(ex, target);
      if (ac.signal.aborted) call.abort(ac.signal.reason as Error);
      let res;
      try {
        res = await call.done;
      } catch (err) {
        // No response from the engine (the call has released its target).
        if (ac.signal.aborted) return clientGone(reply);
        const why = describeFailure(err);
        if (isConnectionError(err)) {
          router.reportFailure(target);
          req.log.warn(
            { err, model, engine: target.baseUrl, workerId: target.workerId, attempt },
            'engine connection failed',
          );
          if (attempt < 2) continue;
          throw new ApiError(
            'service_unavailable',
            `The engine for model ${model} stopped answering (${why}); retry in a few seconds.`,
            null,
            { 'retry-after': RETRY_AFTER_S },
          );
        }
        req.log.error({ err, model, engine: target.baseUrl, workerId: target.workerId }, 'engine request failed');
        throw new ApiError(
          'service_unavailable',
          `The engine for model ${model} failed to answer (${why}); retry in a few seconds.`,
          null,
          { 'retry-after': RETRY_AFTER_S },
        );
      }
      if (res === null) return reply; // streamed to the client (or the client left mid-stream)
      reply.header(OVERHEAD_HEADER, formatOverhead(ex));
      if (res.status >= 400) {
        if (res.retryAfter) reply.header('retry-after', res.retryAfter);
        return reply.status(res.status).type('application/json').send(toOpenAIErrorBody(res.status, res.body));
      }
      return reply.status(res.status).type('application/json').send(res.body);
    }
  } finally {
    reply.raw.off('close', onClose);
  }
}

/** At most 100 characters of client input in a message. */
function clip(s: string): string {
  return s.length > 100 ? `${s.slice(0, 100)}…` : s;
}

function clientGone(reply: FastifyReply): FastifyReply {
  reply.hijack();
  if (!reply.raw.destroyed) reply.raw.destroy();
  return reply;
}
