import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { adminOnly } from '../../auth/plugin.js';
import type { Metrics } from '../../metrics/metrics.js';

/** `GET /metrics`: Prometheus text exposition of our own registry (admin key when keys exist). */
export default async function metricsRoutes(app: FastifyInstance) {
  const metrics = app.deps.metrics;
  if (!metrics) return;
  app.get('/metrics', { onRequest: adminOnly }, async (_req, reply) => {
    const text = await metrics.registry.metrics();
    return reply.header('content-type', metrics.registry.contentType).send(text);
  });
}

/**
 * The HTTP latency histogram's hook, for the root instance: labelled by the route pattern
 * (`/v1/batches/:batch_id`), never the raw URL, so ids do not explode the series count.
 */
export function observeHttp(metrics: Metrics) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    metrics.observeHttp(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
  };
}
