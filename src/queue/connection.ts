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
