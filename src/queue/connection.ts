import { Redis, type RedisOptions } from 'ioredis';

/** Parses REDIS_URL, including unix:///path/to/redis.sock for the private server. */
export function redisOptions(url: string): RedisOptions {
  if (url.startsWith('unix://')) return { path: url.slice('unix://'.length) };
  const u = new URL(url);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    username: u.username || undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}

/**
 * Connections for blocking and worker use: BullMQ requires maxRetriesPerRequest null so
 * commands wait through a Redis restart instead of failing.
 */
export function createRedis(url: string, name: string): Redis {
  return new Redis({ ...redisOptions(url), connectionName: name, maxRetriesPerRequest: null, enableReadyCheck: true });
}

/**
 * Every value under the keys matching `pattern`, parsed as JSON (SCAN, then one MGET). Keys
 * that vanished between the two, and half-written or foreign values, are skipped. Used for the
 * small key families of heartbeats, demand records and GPU readings.
 */
export async function readJsonKeys<T>(redis: Redis, pattern: string, count = 500): Promise<T[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [c, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', count);
    cursor = c;
    found.push(...batch);
  } while (cursor !== '0');
  if (found.length === 0) return [];
  const out: T[] = [];
  for (const v of await redis.mget(...found)) {
    if (!v) continue;
    try {
      out.push(JSON.parse(v) as T);
    } catch {
      // a half-written or foreign key; ignore
    }
  }
  return out;
}
