import type { FastifyInstance } from 'fastify';

export interface HealthChecks {
  /** Each returns null when fine, or why not. */
  sqlite(): string | null;
  redis(): Promise<string | null>;
}

/** Kubernetes probes. Neither touches an engine, so both stay 200 through model swaps. */
export default async function healthRoutes(app: FastifyInstance) {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const [sqlite, redis] = [app.deps.health.sqlite(), await app.deps.health.redis()];
    const ok = !sqlite && !redis;
    return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready', checks: { sqlite: sqlite ?? 'ok', redis: redis ?? 'ok' } });
  });
}
