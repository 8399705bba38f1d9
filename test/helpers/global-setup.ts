import type { TestProject } from 'vitest/node';
import { startRedis, type TestRedis } from './redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let redis: TestRedis | undefined;

/** One real redis-server for the whole run; tests isolate themselves with their own key prefix. */
export async function setup(project: TestProject) {
  redis = await startRedis();
  project.provide('redisUrl', redis.url);
}

export async function teardown() {
  await redis?.stop();
}
