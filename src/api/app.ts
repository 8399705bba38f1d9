import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyError, type FastifyReply } from 'fastify';
import multipart from '@fastify/multipart';
import type { Logger } from '../log/logger.js';
import type { Config } from '../config/load.js';
import { ApiError, errorCatalogue, toOpenAIError } from './errors.js';
import { useUtf8JsonParser } from './json-body.js';
import { newRequestId } from '../domain/ids.js';
import type { FilesRepo } from '../store/files-repo.js';
import type { FileStorage } from '../store/file-storage.js';
import type { BatchesRepo } from '../store/batches-repo.js';
import type { BatchService } from '../control/batch-service.js';
import type { EngineRouter } from '../control/engine-router.js';
import filesRoutes from './routes/files.js';
import batchesRoutes from './routes/batches.js';
import healthRoutes, { type HealthChecks } from './routes/health.js';
import modelsRoutes from './routes/models.js';
import inferenceRoutes from './routes/inference.js';
import { createApiKeysRepo } from '../store/api-keys-repo.js';
import authPlugin from '../auth/plugin.js';
import { openModeAllowed } from '../auth/open-mode.js';
import { registerRateLimit } from '../auth/rate-limit.js';
import dashboardRoutes from './routes/dashboard.js';
import opsResultsRoutes from './routes/ops-results.js';
import opsRoutes from './routes/ops.js';
import metricsRoutes, { observeHttp } from './routes/metrics.js';
import type { OpsService } from '../ops/ops-service.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Db } from '../store/db.js';

export interface AppDeps {
  config: Config;
  log: Logger;
  files: FilesRepo;
  storage: FileStorage;
  batches: BatchesRepo;
  batchService: BatchService;
  router: EngineRouter;
  health: HealthChecks;
  /** For repositories that only routes read (the dashboard's results, stars, benchmarks). */
  db: Db;
  /** The operator API's view of the fleet (/ops/*, /health); routes are absent without it. */
  ops?: OpsService;
  /** Prometheus registry (/metrics, HTTP latency); absent: no /metrics. */
  metrics?: Metrics;
}

declare module 'fastify' {
  interface FastifyInstance {
    deps: AppDeps;
  }
}

// Accept a caller's request id only if it is short and plain: Fastify warns that
// requestIdHeader otherwise lets callers inject arbitrary strings into our logs.
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the Fastify app (routes, error envelope, request ids). Never listens. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // Typed as Fastify's logger interface, so the instance is FastifyInstance (not one generic over pino's Logger).
  const loggerInstance: FastifyBaseLogger = deps.log.child({ component: 'api' });
  const app = Fastify({
    loggerInstance,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID_RE.test(incoming) ? incoming : newRequestId();
    },
    bodyLimit: 32 * 1024 * 1024,
    // No total limits (0): a 200 MB upload on a slow link and an hour-long SSE stream or
    // non-streaming completion must not be cut. Stalls are caught by idle limits instead: an
    // upload that sends nothing for UPLOAD_IDLE_TIMEOUT_MS (routes/files.ts), and headers
    // that take longer than Node's headersTimeout (set below).
    connectionTimeout: 0,
    requestTimeout: 0,
    keepAliveTimeout: 65_000,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
    // Errors Fastify raises before routing (bad URL, over-long path parameter) get our envelope too.
    // onRequest hooks have not run for these, so the request id header is set here; the URL
    // Fastify echoes in the message is cut short (a 100 KB path must not come back whole).
    frameworkErrors: (err, req, reply) => {
      const status = err.statusCode && err.statusCode < 500 ? err.statusCode : 400;
      const message = err.message.length > 300 ? `${err.message.slice(0, 300)}…` : err.message;
      void (reply as unknown as FastifyReply)
        .status(status)
        .header('x-request-id', req.id)
        .send(toOpenAIError(`${message}. Check the request URL.`, 'invalid_request_error', null, 'invalid_request'));
    },
  });
  app.decorate('deps', deps);
  useUtf8JsonParser(app);
  // Slow-loris on headers: the whole header block within 30 s (Node checks every 30 s).
  app.server.headersTimeout = 30_000;

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  if (deps.metrics) app.addHook('onResponse', observeHttp(deps.metrics));

  // Before every route and every plugin that adds routes: auth (request.principal, 401s), then
  // the per-key rate limit, which reads the principal.
  const { env } = deps.config;
  await app.register(authPlugin, {
    keys: createApiKeysRepo(deps.db),
    allowOpen: openModeAllowed(env.HOST, env.ALLOW_UNAUTHENTICATED),
  });
  await registerRateLimit(app, env.RATE_LIMIT_PER_MIN);

  await app.register(multipart, {
    limits: { fileSize: deps.config.env.MAX_UPLOAD_BYTES, files: 1, fields: 10, fieldSize: 64 * 1024, parts: 12 },
  });

  app.setErrorHandler((err: FastifyError | ApiError | Error, req, reply) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      if (err.status >= 500) req.log.error({ err }, 'request failed');
      return reply.status(err.status).send(toOpenAIError(err.message, err.type, err.param, err.code));
    }
    const fe = err as FastifyError;
    const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
    if (status >= 500) {
      req.log.error({ err }, 'unhandled error');
      return reply
        .status(500)
        .send(
          toOpenAIError(
            `The server had an error while processing your request (request id ${req.id}). Retry, and report the id if it persists.`,
            'server_error',
            null,
            'internal_error',
          ),
        );
    }
    const code = fastifyCodeToOurs(fe.code, status);
    const type = errorCatalogue[code]?.type ?? 'invalid_request_error';
    return reply.status(status).send(toOpenAIError(humanise(fe), type, null, code));
  });

  app.setNotFoundHandler((req, reply) => {
    reply
      .status(404)
      .send(
        toOpenAIError(
          `Unknown route ${req.method} ${req.url.split('?')[0]!.slice(0, 300)}. See the API reference in README.md.`,
          'invalid_request_error',
          null,
          'route_not_found',
        ),
      );
  });

  await app.register(healthRoutes);
  await app.register(filesRoutes, { prefix: '/v1' });
  await app.register(batchesRoutes, { prefix: '/v1' });
  await app.register(modelsRoutes, { prefix: '/v1' });
  await app.register(inferenceRoutes, { prefix: '/v1' });
  await app.register(opsResultsRoutes, { prefix: '/ops' });
  if (deps.ops) await app.register(opsRoutes, { prefix: '/ops' });
  await app.register(metricsRoutes);
  await app.register(dashboardRoutes);
  return app;
}

function fastifyCodeToOurs(code: string | undefined, status: number): keyof typeof errorCatalogue {
  switch (code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'invalid_json';
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'request_too_large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return 'unsupported_media_type';
    case 'FST_REQ_FILE_TOO_LARGE':
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return status === 413 ? 'file_too_large' : 'invalid_multipart';
    default:
      if (status === 413) return 'request_too_large';
      if (status === 415) return 'unsupported_media_type';
      if (status === 408) return 'request_timeout';
      return 'invalid_request';
  }
}

function humanise(err: FastifyError): string {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return `The request body is not valid JSON (${err.message}). Send a JSON object with Content-Type: application/json.`;
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'The request body is empty. Send a JSON object with Content-Type: application/json.';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return `${err.message}. Send application/json, or multipart/form-data for file uploads.`;
    default:
      return err.message;
  }
}
