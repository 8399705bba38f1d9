import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { parseOr400 } from '../zod-params.js';
import { createBatchBody, listBatchesQuery, toBatchObject } from '../schemas/batches.js';
import { BATCH_ID_RE } from '../../domain/ids.js';
import { canSee, listScope } from '../../auth/principal.js';
import { readIdempotencyKey } from '../idempotency.js';

export default async function batchesRoutes(app: FastifyInstance) {
  const { batches, batchService } = app.deps;

  app.post('/batches', async (req) => {
    const body = parseOr400(createBatchBody, req.body);
    const idempotencyKey = readIdempotencyKey(req);
    const retryCount = Number(req.headers['x-stainless-retry-count'] ?? 0) || 0;
    return toBatchObject(batchService.create(body, { idempotencyKey, retryCount, principal: req.principal }));
  });

  app.get('/batches', async (req) => {
    const q = parseOr400(listBatchesQuery, req.query);
    let after;
    if (q.after !== undefined) {
      after = BATCH_ID_RE.test(q.after) ? batches.get(q.after) : undefined;
      // Another project's batch is as unknown here as anywhere else.
      if (after && !canSee(req.principal, after.owner)) after = undefined;
      if (!after)
        throw new ApiError(
          'invalid_request',
          `after=${q.after} is not a batch id from this server. Pass the last id of the previous page.`,
          'after',
        );
    }
    const page = batches.list({ limit: q.limit, after, owner: listScope(req.principal) });
    const data = page.rows.map(toBatchObject);
    return {
      object: 'list',
      data,
      first_id: data[0]?.id ?? null,
      last_id: data.at(-1)?.id ?? null,
      has_more: page.hasMore,
    };
  });

  app.get<{ Params: { id: string } }>('/batches/:id', async (req) =>
    toBatchObject(batchService.get(req.params.id, req.principal)),
  );

  app.post<{ Params: { id: string } }>('/batches/:id/cancel', async (req) =>
    toBatchObject(await batchService.cancel(req.params.id, req.principal)),
  );
}
