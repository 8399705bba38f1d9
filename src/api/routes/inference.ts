/**
 * Interactive inference: POST /v1/chat/completions, /v1/completions, /v1/embeddings,
 * proxied to a ready engine (vLLM or the simulator) chosen by the engine router.
 *
 * The request body goes upstream byte for byte (multimodal parts, tools, response_format,
 * engine-specific extras); only `model` is read. Streams are piped as they arrive, with
 * backpressure; a client that goes away aborts the upstream request, which frees the
 * engine's slot. Every acquired target is released exactly once.
 */
import { once } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import { ApiError } from '../errors.js';
import { toOpenAIErrorBody } from '../../engines/failures.js';
import type { EngineRouter, EngineTarget } from '../proxy/router-types.js';
import { checkBody, describeFailure, INFERENCE_PATHS, isConnectionError, sseErrorEvent, type InferencePath } from '../proxy/upstream.js';

export interface InferenceRoutesOptions {
  /** The router to use; defaults to `app.deps.router`. */
  router?: EngineRouter;
}

/** Retry-After (seconds) on a 503 for an engine that stopped answering. */
const RETRY_AFTER_S = '5';

/** The exact request bytes, kept by this plugin's JSON parser next to the parsed body. */
const rawBodies = new WeakMap<FastifyRequest, Buffer>();

/** Thrown internally when the client went away: nothing is sent. */
class ClientGone extends Error {
  override name = 'ClientGone';
}

type Upstream =
  | { kind: 'buffered'; status: number; body: Buffer; retryAfter: string | null }
  | { kind: 'stream'; target: EngineTarget; res: Dispatcher.ResponseData };

export default async function inferenceRoutes(app: FastifyInstance, opts: InferenceRoutesOptions) {
  const router = opts.router ?? (app.deps as { router?: EngineRouter } | undefined)?.router;
  if (!router) throw new Error('inference routes need an engine router (app.deps.router)');

  // Scoped to this plugin by encapsulation: replaces the default JSON parser here only,
  // keeping the raw bytes for forwarding; parsing (and its errors) stay Fastify's own.
  const defaultJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const buf = body as Buffer;
    rawBodies.set(req, buf);
    defaultJson(req, buf.toString('utf8'), done);
  });

  for (const path of INFERENCE_PATHS) {
    app.post(path, (req, reply) => proxy(router, path, req, reply));
  }
}

async function proxy(router: EngineRouter, path: InferencePath, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const checked = checkBody(req.body);
  if (!checked.ok) throw new ApiError(checked.code, checked.message, checked.param);
  const { model, stream } = checked;
  if (!router.isKnownModel(model)) {
    throw new ApiError('model_not_found', `The model '${model}' does not exist on this server; see GET /v1/models for the models it serves.`, 'model');
  }
  const raw = rawBodies.get(req) ?? Buffer.from(JSON.stringify(req.body));

  // Aborted when the client disconnects before its response is complete.
  const ac = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) ac.abort(new ClientGone('client disconnected'));
  };
  reply.raw.on('close', onClose);
  if (req.raw.socket?.destroyed) onClose();

  try {
    let up: Upstream;
    try {
      up = await send(router, model, `/v1${path}`, raw, stream, req, ac.signal);
    } catch (err) {
      if (ac.signal.aborted) return clientGone(reply);
      throw err;
    }
    if (up.kind === 'buffered') {
      if (up.status >= 400) {
        if (up.retryAfter) reply.header('retry-after', up.retryAfter);
        return reply.status(up.status).type('application/json').send(toOpenAIErrorBody(up.status, up.body));
      }
      return reply.status(up.status).type('application/json').send(up.body);
    }
    await pipeStream(router, up.target, up.res, req, reply, ac.signal);
    return reply;
  } finally {
    reply.raw.off('close', onClose);
  }
}

/**
 * Acquires an engine and sends the request. A connection failure (refused, reset, closed
 * before a response) marks the engine failed and is retried once on a freshly acquired
 * one; a second failure, or any other failure to get a response, is a 503.
 */
async function send(
  router: EngineRouter,
  model: string,
  path: string,
  body: Buffer,
  stream: boolean,
  req: FastifyRequest,
  signal: AbortSignal,
): Promise<Upstream> {
  for (let attempt = 1; ; attempt++) {
    const target = await router.acquire(model, signal);
    let keep = false;
    try {
      const res = await target.dispatcher.request({
        origin: target.baseUrl,
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': req.id },
        body,
        signal,
      });
      if (stream && res.statusCode < 400) {
        keep = true; // released when the stream ends
        return { kind: 'stream', target, res };
      }
      const buf = Buffer.from(await res.body.arrayBuffer());
      const retryAfter = res.headers['retry-after'];
      return { kind: 'buffered', status: res.statusCode, body: buf, retryAfter: typeof retryAfter === 'string' ? retryAfter : null };
    } catch (err) {
      if (signal.aborted) throw err;
      const why = describeFailure(err);
      if (isConnectionError(err)) {
        router.reportFailure(target);
        req.log.warn({ err, model, engine: target.baseUrl, workerId: target.workerId, attempt }, 'engine connection failed');
        if (attempt < 2) continue;
        throw new ApiError('service_unavailable', `The engine for model ${model} stopped answering (${why}); retry in a few seconds.`, null, { 'retry-after': RETRY_AFTER_S });
      }
      req.log.error({ err, model, engine: target.baseUrl, workerId: target.workerId }, 'engine request failed');
      throw new ApiError('service_unavailable', `The engine for model ${model} failed to answer (${why}); retry in a few seconds.`, null, { 'retry-after': RETRY_AFTER_S });
    } finally {
      if (!keep) target.release();
    }
  }
}

/** Pipes an engine's SSE response to the client as it arrives, honouring backpressure. */
async function pipeStream(router: EngineRouter, target: EngineTarget, res: Dispatcher.ResponseData, req: FastifyRequest, reply: FastifyReply, signal: AbortSignal): Promise<void> {
  reply.hijack();
  const out = reply.raw;
  try {
    const upstreamType = res.headers['content-type'];
    out.writeHead(res.statusCode, {
      'content-type': typeof upstreamType === 'string' && upstreamType.includes('event-stream') ? upstreamType : 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      'x-request-id': req.id,
    });
    out.flushHeaders();
    try {
      for await (const chunk of res.body) {
        if (!out.write(chunk as Buffer)) await once(out, 'drain', { signal });
      }
      out.end();
    } catch (err) {
      if (signal.aborted || out.destroyed) return; // the client left; the upstream request is aborted
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
    }
  } finally {
    if (!res.body.destroyed) res.body.destroy();
    target.release();
  }
}

function clientGone(reply: FastifyReply): FastifyReply {
  reply.hijack();
  if (!reply.raw.destroyed) reply.raw.destroy();
  return reply;
}
