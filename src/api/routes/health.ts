import type { FastifyInstance } from 'fastify';
import { adminOnly } from '../../auth/plugin.js';

export interface HealthChecks {
  /** Each returns null when fine, or why not. */
  sqlite(): string | null;
  redis(): Promise<string | null>;
}

/**
 * Kubernetes probes (/healthz, /readyz): neither touches an engine or a worker, so both stay
 * 200 through model swaps and long loads. /health is the operator's summary (admin key when
 * keys exist): healthy, degraded or unhealthy, with the reasons in words.
 */
export default async function healthRoutes(app: FastifyInstance) {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const [sqlite, redis] = [app.deps.health.sqlite(), await app.deps.health.redis()];
    const ok = !sqlite && !redis;
    return reply
      .status(ok ? 200 : 503)
      .send({ status: ok ? 'ready' : 'not_ready', checks: { sqlite: sqlite ?? 'ok', redis: redis ?? 'ok' } });
  });

  // 200 while the API itself works (healthy or degraded: the reasons say what to fix), 503 when
  // SQLite or Redis is down.
  app.get('/health', { onRequest: adminOnly }, async (_req, reply) => {
    const ops = app.deps.ops;
    if (!ops) {
      const [sqlite, redis] = [app.deps.health.sqlite(), await app.deps.health.redis()];
      const reasons = [sqlite, redis].filter((r): r is string => r !== null);
      return reply.status(reasons.length ? 503 : 200).send({
        status: reasons.length ? 'unhealthy' : 'healthy',
        reasons,
        notes: [],
        checks: { redis: redis ?? 'ok', sqlite: sqlite ?? 'ok', workers: [], engines: [], gpus: [] },
      });
    }
    const h = await ops.health();
    return reply.status(h.status === 'unhealthy' ? 503 : 200).send(h);
  });
}
