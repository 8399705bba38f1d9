import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { parseOr400 } from '../zod-params.js';
import { createBatchBody, listBatchesQuery, toBatchObject } from '../schemas/batches.js';
import { BATCH_ID_RE } from '../../domain/ids.js';

const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,255}$/;

export default async function batchesRoutes(app: FastifyInstance) {
  const { batches, batchService } = app.deps;

  app.post('/batches', async (req) => {
    const body = parseOr400(createBatchBody, req.body);
    const key = req.headers['idempotency-key'];
    if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY_RE.test(key))) {
      throw new ApiError('invalid_request', 'The Idempotency-Key header must be 1 to 255 printable ASCII characters.', 'Idempotency-Key');
    }
    const retryCount = Number(req.headers['x-stainless-retry-count'] ?? 0) || 0;
    return toBatchObject(batchService.create(body, { idempotencyKey: key, retryCount }));
  });

  app.get('/batches', async (req) => {
    const q = parseOr400(listBatchesQuery, req.query);
    let after;
    if (q.after !== undefined) {
      after = BATCH_ID_RE.test(q.after) ? batches.get(q.after) : undefined;
      if (!after) throw new ApiError('invalid_request', `after=${q.after} is not a batch id from this server. Pass the last id of the previous page.`, 'after');
    }
    const page = batches.list({ limit: q.limit, after });
    const data = page.rows.map(toBatchObject);
    return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore };
  });

  app.get<{ Params: { id: string } }>('/batches/:id', async (req) => toBatchObject(batchService.get(req.params.id)));

  app.post<{ Params: { id: string } }>('/batches/:id/cancel', async (req) => toBatchObject(await batchService.cancel(req.params.id)));
}
