import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { buildApp } from './api/app.js';
import { ConfigError, loadConfig, type Config } from './config/load.js';
import { createBatchRunner } from './control/batch-runner.js';
import { createBatchService } from './control/batch-service.js';
import { createEngineRouter } from './control/engine-router.js';
import { ModelManager } from './engines/model-manager.js';
import { reapOrphanEngines } from './engines/orphans.js';
import { prepareBuiltinModels } from './engines/tiny-model.js';
import { createLogger, type Logger } from './log/logger.js';
import { createRedis } from './queue/connection.js';
import { RedisMissingError, startPrivateRedis } from './queue/private-redis.js';
import { createBatchesRepo } from './store/batches-repo.js';
import { DataDirInUseError, lockDataDir } from './store/data-dir-lock.js';
import { openDb } from './store/db.js';
import { createFileStorage } from './store/file-storage.js';
import { createFilesRepo } from './store/files-repo.js';
import { createWorkerNode } from './worker/worker-node.js';
import { createOpsRepo } from './store/ops-repo.js';
import { createOpsService } from './ops/ops-service.js';
import { startOpsPublisher } from './ops/worker-publisher.js';
import { createMetrics } from './metrics/metrics.js';
import { assertListenAllowed, assertListenAllowedIn, UnauthenticatedListenError } from './auth/open-mode.js';
import { createApiKeysRepo } from './store/api-keys-repo.js';
import { setupWebhooks } from './webhooks/setup.js';

export interface Running {
  close(): Promise<void>;
}

async function pingWithin(redis: Redis, ms: number): Promise<string | null> {
  if (redis.status !== 'ready') return `redis connection is ${redis.status}`;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>(
    (r) => (timer = setTimeout(() => r(`redis did not answer PING within ${ms} ms`), ms)),
  );
  try {
    return await Promise.race([redis.ping().then(() => null), timeout]);
  } catch (e) {
    return `redis: ${(e as Error).message}`;
  } finally {
    clearTimeout(timer);
  }
}

/** The control plane: HTTP API + batch runner. It alone opens SQLite and the file store. */
export async function startApi(
  config: Config,
  log: Logger,
  redisUrl: string,
): Promise<Running & { url: string; app: FastifyInstance }> {
  const db = openDb(path.join(config.dataDir, 'db.sqlite'));
  try {
    assertListenAllowed(config.env.HOST, config.env.ALLOW_UNAUTHENTICATED, createApiKeysRepo(db));
  } catch (e) {
    db.$client.close();
    throw e;
  }
  const storage = createFileStorage(path.join(config.dataDir, 'files'));
  const files = createFilesRepo(db);
  const batches = createBatchesRepo(db);
  const webhooks = setupWebhooks(config, db, batches, log.child({ component: 'webhooks' }));
  const redis = createRedis(redisUrl, 'api');
  const runner = createBatchRunner({
    config,
    log: log.child({ component: 'batches' }),
    redis,
    batches,
    files,
    storage,
    onEnded: (batchId) => webhooks.recordEnded(batchId),
  });
  const router = createEngineRouter({
    redis,
    subscriber: createRedis(redisUrl, 'api-events'),
    prefix: config.env.QUEUE_PREFIX,
    models: config.models.map((m) => m.id),
    log: log.child({ component: 'router' }),
    waitMs: config.env.INFERENCE_WAIT_MS,
  });
  const batchService = createBatchService({ config, log: log.child({ component: 'batches' }), batches, files, runner });
  const health = {
    sqlite: () => {
      try {
        db.$client.prepare('SELECT 1').get();
        return null;
      } catch (e) {
        return `sqlite: ${(e as Error).message}`;
      }
    },
    redis: () => pingWithin(redis, 1000),
  };
  const opsRepo = createOpsRepo(db);
  const ops = createOpsService({
    redis,
    prefix: config.env.QUEUE_PREFIX,
    repo: opsRepo,
    log: log.child({ component: 'ops' }),
    heartbeats: () => router.heartbeats(),
    checks: health,
  });
  batches.onStatusChange(() => ops.refreshSoon());
  const metrics = createMetrics({
    redis,
    prefix: config.env.QUEUE_PREFIX,
    repo: opsRepo,
    ops,
    log: log.child({ component: 'metrics' }),
  });
  await metrics.start();
  const app = await buildApp({ config, log, files, storage, batches, batchService, router, health, db, ops, metrics });
  const url = await app.listen({ port: config.env.PORT, host: config.env.HOST });
  runner.start();
  webhooks.start();
  ops.start();
  log.info({ url }, 'api listening');
  return {
    url,
    app,
    async close() {
      await app.close();
      ops.stop();
      await router.close();
      await runner.stop();
      await webhooks.stop();
      await redis.quit().catch(() => redis.disconnect());
      db.$client.close();
    },
  };
}

/** A GPU worker: BullMQ consumers + the ModelManager for this machine's engines. */
export async function startWorker(config: Config, log: Logger, redisUrl: string): Promise<Running> {
  const logDir = path.join(config.dataDir, 'logs');
  await reapOrphanEngines(logDir, log.child({ component: 'engines' }));
  const manager = new ModelManager({
    models: await prepareBuiltinModels(config.models, config.dataDir, log.child({ component: 'engines' })),
    logDir,
    log: log.child({ component: 'engines' }),
    bindHost: config.env.ENGINE_BIND_HOST,
    ...(config.env.WORKER_GPUS !== undefined && { workerGpus: config.env.WORKER_GPUS }),
    ...(config.env.HOST_RAM_BUDGET_MB !== undefined && { hostRamBudgetMb: config.env.HOST_RAM_BUDGET_MB }),
  });
  const node = createWorkerNode({ config, log: log.child({ component: 'worker' }), redisUrl, engines: manager });
  node.start();
  const opsRedis = createRedis(redisUrl, `worker-${node.workerId}-ops`);
  const ops = startOpsPublisher({
    redis: opsRedis,
    prefix: config.env.QUEUE_PREFIX,
    workerId: node.workerId,
    engines: manager,
    log: log.child({ component: 'ops', workerId: node.workerId }),
    gpuPollMs: config.env.GPU_POLL_MS,
  });
  return {
    async close() {
      await node.close();
      await manager.shutdown();
      await ops.close(); // after the shutdown: the engines' last lines and states are published too
      opsRedis.disconnect();
    },
  };
}

const MODES = ['all', 'serve', 'worker'] as const;
type Mode = (typeof MODES)[number];

async function main(): Promise<void> {
  const mode = (process.argv[2] ?? 'all') as Mode;
  if (!MODES.includes(mode)) {
    console.error(`usage: main.ts [all|serve|worker]  (got "${mode}")`);
    process.exit(2);
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`configuration error:\n${e.issues.map((l) => `  ${l}`).join('\n')}`);
      process.exit(1);
    }
    throw e;
  }
  const log = createLogger(config.env.LOG_LEVEL);
  const parts: Running[] = [];
  let redisUrl = config.env.REDIS_URL;
  try {
    if (mode !== 'worker') {
      const lock = lockDataDir(config.dataDir);
      // Before a private Redis or a worker starts: refusing to listen must leave nothing running.
      assertListenAllowedIn(path.join(config.dataDir, 'db.sqlite'), config.env.HOST, config.env.ALLOW_UNAUTHENTICATED);
      // eslint-disable-next-line @typescript-eslint/require-await -- async so that a throwing release() rejects, for the shutdown loop's catch
      parts.push({ close: async () => lock.release() });
    }
    if (!redisUrl) {
      if (mode === 'worker')
        throw new RedisMissingError(
          'A worker started on its own needs REDIS_URL: the Redis of the control plane it serves.',
        );
      const privateRedis = await startPrivateRedis(config.dataDir, log.child({ component: 'redis' }));
      parts.push({ close: () => privateRedis.stop() });
      redisUrl = privateRedis.url;
    }
    if (mode === 'all' || mode === 'worker') parts.push(await startWorker(config, log, redisUrl));
    if (mode === 'all' || mode === 'serve') parts.push(await startApi(config, log, redisUrl));
  } catch (e) {
    if (e instanceof RedisMissingError || e instanceof DataDirInUseError || e instanceof UnauthenticatedListenError) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }

  // Shutdown order is the reverse of start: API (stop taking requests, stop dispatch) →
  // worker (finish or hand back chunks, stop engines) → private Redis, under one deadline.
  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error({ deadlineMs: config.env.SHUTDOWN_TIMEOUT_MS }, 'shutdown deadline passed; exiting');
      process.exit(1);
    }, config.env.SHUTDOWN_TIMEOUT_MS);
    force.unref();
    for (const p of parts.reverse()) await p.close().catch((err) => log.error({ err }, 'error during shutdown'));
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
