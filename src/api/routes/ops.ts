import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../errors.js';
import { parseOr400 } from '../zod-params.js';
import { adminOnly } from '../../auth/plugin.js';
import type { OpsService } from '../../ops/ops-service.js';

const batchesQuery = z
  .object({
    status: z.enum(['active', 'all']).default('active'),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();
const limitQuery = (def: number, max: number) =>
  z.object({ limit: z.coerce.number().int().min(1).max(max).default(def) }).strict();
const tailQuery = z.object({ tail: z.coerce.number().int().min(0).max(2000).default(200) }).strict();

/**
 * Opens a Server-Sent Events response on the raw socket (works with EventSource and with
 * fetch streaming, which can send an Authorization header). Returns `send` and a signal
 * that aborts when the client goes away; a comment every SSE_HEARTBEAT_MS keeps proxies from closing it.
 */
function openSse(
  req: FastifyRequest,
  reply: FastifyReply,
  open: Set<() => void>,
  heartbeatMs: number,
): { send: (event: string, data: unknown) => void; signal: AbortSignal } {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': req.id,
  });
  res.write(': connected\n\n');
  const ac = new AbortController();
  const beat = setInterval(() => res.write(': heartbeat\n\n'), heartbeatMs);
  const end = () => {
    clearInterval(beat);
    open.delete(finish);
    ac.abort();
  };
  const finish = () => {
    end();
    res.end();
  };
  open.add(finish);
  req.raw.on('close', end);
  res.on('close', end);
  return {
    signal: ac.signal,
    send(event, data) {
      if (!ac.signal.aborted) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
  };
}

function opsOf(app: FastifyInstance): OpsService {
  const ops = app.deps.ops;
  if (!ops) throw new Error('the operator API needs deps.ops');
  return ops;
}

/** The operator API (docs/operator-api.md). Admin key required when keys exist. */
export default async function opsRoutes(app: FastifyInstance) {
  app.addHook('onRequest', adminOnly);
  const ops = opsOf(app);
  // Event streams never end by themselves: close them when the server closes, or close() waits for them.
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const finish of [...streams]) finish();
  });

  app.get('/batches', async (req) => {
    const q = parseOr400(batchesQuery, req.query);
    return { object: 'list', data: ops.listBatches({ active: q.status === 'active', limit: q.limit }) };
  });

  app.get<{ Params: { id: string } }>('/batches/:id', async (req) => {
    const b = ops.getBatch(req.params.id);
    if (!b)
      throw new ApiError(
        'batch_not_found',
        `No batch with id '${req.params.id}'. See GET /ops/batches?status=all for the batches on this server.`,
        'batch_id',
      );
    return b;
  });

  app.get('/workers', async () => ({ object: 'list', data: ops.workers() }));
  app.get('/engines', async () => ({ object: 'list', data: ops.engines() }));
  app.get('/gpus', async () => ({ object: 'list', data: await ops.gpus() }));
  app.get('/swaps', async (req) => ({
    object: 'list',
    data: await ops.swaps(parseOr400(limitQuery(50, 1000), req.query).limit),
  }));
  app.get('/errors', async (req) => ({
    object: 'list',
    data: await ops.errors(parseOr400(limitQuery(50, 1000), req.query).limit),
  }));

  app.get('/events', async (req, reply) => {
    const sse = openSse(req, reply, streams, app.deps.config.env.SSE_HEARTBEAT_MS);
    // What this stream last sent of each list: the service emits on its own changes, and this
    // stream's first snapshot was taken in between, so an equal list is not sent twice.
    const sent = { batches: '', engines: '' };
    const sendChanged = (event: 'batches' | 'engines', data: unknown) => {
      const json = JSON.stringify(data);
      if (json === sent[event]) return;
      sent[event] = json;
      sse.send(event, data);
    };
    const onBatches = (data: unknown) => sendChanged('batches', data);
    const onEngines = (data: unknown) => sendChanged('engines', data);
    sendChanged('batches', ops.listBatches({ active: true, limit: 1000 }));
    sendChanged('engines', ops.engines());
    ops.events.on('batches', onBatches);
    ops.events.on('engines', onEngines);
    sse.signal.addEventListener('abort', () => {
      ops.events.off('batches', onBatches);
      ops.events.off('engines', onEngines);
    });
  });

  app.get<{ Params: { worker_id: string; model: string } }>('/engines/:worker_id/:model/log', async (req, reply) => {
    const { tail } = parseOr400(tailQuery, req.query);
    const { worker_id: workerId, model } = req.params;
    if (!app.deps.config.models.some((m) => m.id === model)) {
      throw new ApiError(
        'model_not_found',
        `The model '${model.slice(0, 100)}' is not in models.yaml. URL-encode model ids that contain '/' (google%2Fgemma-3-12b-it).`,
        'model',
      );
    }
    ops.assertRedis();
    const sse = openSse(req, reply, streams, app.deps.config.env.SSE_HEARTBEAT_MS);
    const onLines = (lines: { t: number; line: string }[]) => {
      for (const l of lines) sse.send('line', l);
    };
    ops
      .followLog({ workerId, model, tail, signal: sse.signal, onLines })
      .catch((err) => {
        req.log.warn({ err, workerId, model }, 'engine log stream failed');
        sse.send('stream_error', { message: 'reading the engine log from Redis failed; reconnect to retry' });
      })
      .finally(() => reply.raw.end());
  });
}
