import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { startApi, startWorker, type Running } from '../../src/main.js';

export const SIM_MODEL = 'sim-model';

export const defaultModelsYaml = (sim: Record<string, unknown> = {}) =>
  `models:\n  - id: ${SIM_MODEL}\n    engine: sim\n    startup_timeout_s: 30\n    options:\n      max_num_seqs: 16\n    sim: ${JSON.stringify({ output_tokens: 8, ...sim })}\n`;

export interface TestServer {
  baseUrl: string;
  app: FastifyInstance;
  dataDir: string;
  config: Config;
  redisUrl: string;
  prefix: string;
  client: OpenAI;
  /** Parsed log lines, when started with captureLogs (level debug, or logLevel when given). */
  logs: Record<string, unknown>[];
  /** Starts an in-process worker (engines as real child processes). */
  startWorker(): Promise<Running>;
  close(): Promise<void>;
}

/**
 * The real control plane in this process: real SQLite in a temp dir, the run's real Redis
 * with a fresh key prefix, listening on 127.0.0.1:<free port>.
 */
export async function startTestServer(
  opts: {
    env?: Record<string, string>;
    modelsYaml?: string;
    worker?: boolean;
    logLevel?: string;
    captureLogs?: boolean;
  } = {},
): Promise<TestServer> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'bw-test-'));
  const modelsFile = path.join(dataDir, 'models.yaml');
  writeFileSync(modelsFile, opts.modelsYaml ?? defaultModelsYaml());
  const prefix = `t${randomBytes(6).toString('hex')}`;
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    MODELS_FILE: modelsFile,
    REDIS_URL: inject('redisUrl'),
    QUEUE_PREFIX: prefix,
    LOG_LEVEL: opts.logLevel ?? process.env.TEST_LOG_LEVEL ?? 'silent',
    JOB_LOCK_MS: '5000',
    JOB_STALLED_INTERVAL_MS: '1000',
    ...opts.env,
  });
  const redisUrl = config.env.REDIS_URL!;
  const logs: Record<string, unknown>[] = [];
  // Logs as data: tests parse the JSON lines and assert on fields (and on what never appears).
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  // Captured logs are at debug unless the test names a level (logLevel: 'info' checks the default).
  const log = opts.captureLogs ? createLogger(opts.logLevel ?? 'debug', sink) : createLogger(config.env.LOG_LEVEL);
  const api = await startApi(config, log, redisUrl);
  const running: Running[] = [];
  const server: TestServer = {
    baseUrl: api.url,
    app: api.app,
    dataDir,
    config,
    redisUrl,
    prefix,
    client: new OpenAI({ baseURL: `${api.url}/v1`, apiKey: 'test-key', maxRetries: 0 }),
    logs,
    async startWorker() {
      const w = await startWorker(config, log, redisUrl);
      running.push(w);
      return w;
    },
    async close() {
      for (const r of running.reverse()) await r.close();
      await api.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  if (opts.worker) await server.startWorker();
  return server;
}
