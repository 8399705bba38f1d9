import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import { isProcessAlive } from '../os/process.js';

export class RedisMissingError extends Error {
  override name = 'RedisMissingError';
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no free port'))));
    });
  });
}

/**
 * Polls until Redis at `url` answers PING (an AOF still loading answers LOADING: keep waiting).
 * Returns null when it does, 'timeout', or what `gaveUp()` says (e.g. the server exited).
 */
export async function waitForRedis(
  url: string,
  timeoutMs: number,
  gaveUp: () => string | null = () => null,
): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stop = gaveUp();
    if (stop) return stop;
    const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => undefined); // refused until the server listens
    try {
      await r.connect();
      await r.ping();
      return null;
    } catch {
      if (Date.now() > deadline) return 'timeout';
      await sleep(50);
    } finally {
      r.disconnect();
    }
  }
}

/**
 * A redis-server of our own under DATA_DIR/redis (append-only file on, so queued work
 * survives a restart). A server left behind by a run that was SIGKILLed is stopped first:
 * two servers writing one AOF would corrupt it.
 */
export async function startPrivateRedis(dataDir: string, log: Logger): Promise<{ url: string; stop(): Promise<void> }> {
  if (spawnSync('redis-server', ['--version']).error) {
    throw new RedisMissingError(
      'redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server), or set REDIS_URL=redis://host:6379 to use a Redis you already run.',
    );
  }
  const dir = path.join(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const pidFile = path.join(dir, 'redis.pid');
  if (existsSync(pidFile)) {
    const old = Number(readFileSync(pidFile, 'utf8').trim());
    if (old > 0 && isProcessAlive(old)) {
      log.warn({ pid: old }, 'stopping a private redis-server left by an earlier run');
      process.kill(old, 'SIGTERM');
      for (let i = 0; i < 100 && isProcessAlive(old); i++) await sleep(50);
    }
  }
  const port = await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--pidfile',
      pidFile,
      '--appendonly',
      'yes',
      '--appendfsync',
      'everysec',
      '--save',
      '',
      '--daemonize',
      'no',
      '--logfile',
      path.join(dir, 'redis.log'),
    ],
    // Its own process group: a Ctrl-C to our group must not kill Redis before the worker
    // and API have handed their work back to it (stop() ends it last).
    { stdio: 'ignore', detached: true },
  );
  const url = `redis://127.0.0.1:${port}`;
  const logFile = path.join(dir, 'redis.log');
  const problem = await waitForRedis(url, 15_000, () =>
    child.exitCode !== null ? `the private redis-server exited with code ${child.exitCode}; see ${logFile}` : null,
  );
  if (problem)
    throw new Error(
      problem === 'timeout' ? `the private redis-server did not answer within 15 s; see ${logFile}` : problem,
    );
  log.info({ url, dir }, 'private redis-server started');
  return {
    url,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
    },
  };
}
