import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { startRedis, type TestRedis } from './redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let redis: TestRedis | undefined;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * One real redis-server for the whole run; tests isolate themselves with their own key prefix.
 * And dist/ built once (when stale) before any test: tests that run the server, the CLI or a
 * worker as a process run the compiled build, as production does (test/helpers/processes.ts),
 * and no test rebuilds it while another one runs it.
 */
export async function setup(project: TestProject) {
  execFileSync('bash', [path.join(ROOT, 'scripts/ensure-built.sh')], { cwd: ROOT, stdio: 'inherit' });
  redis = await startRedis();
  project.provide('redisUrl', redis.url);
}

export async function teardown() {
  await redis?.stop();
}
