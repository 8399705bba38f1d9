import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { ApiError } from '../api/errors.js';
import { isPublicRoute } from './plugin.js';

/**
 * Per-key request rate limit (@fastify/rate-limit, in memory: there is one control plane per
 * DATA_DIR). Keyed by the key id, so every client of one key shares its budget; by client IP in
 * open mode. Health probes are never limited. Must be registered after the auth plugin (it
 * reads request.principal) and before the routes (it attaches to each route as it is added).
 */
export async function registerRateLimit(app: FastifyInstance, perMinute: number): Promise<void> {
  if (perMinute <= 0) return;
  await app.register(rateLimit, {
    global: true,
    max: perMinute,
    timeWindow: 60_000,
    keyGenerator: (req: FastifyRequest) => (req.principal ? `key:${req.principal.keyId}` : `ip:${req.ip}`),
    allowList: (req: FastifyRequest) => isPublicRoute(req.method, req.routeOptions.url),
    errorResponseBuilder: (req, ctx) => {
      const retryAfter = String(Math.max(1, Math.ceil(ctx.ttl / 1000)));
      const who = req.principal ? `API key ${req.principal.keyId}` : 'this client address';
      return new ApiError(
        'rate_limit_exceeded',
        `Rate limit reached for ${who}: ${ctx.max} requests per minute (RATE_LIMIT_PER_MIN). Retry after ${retryAfter} s (Retry-After header), and spread requests out.`,
        null,
        { 'retry-after': retryAfter },
      );
    },
  });
}
