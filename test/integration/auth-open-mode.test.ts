import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createKey, revokeKey } from '../../src/auth/keys-admin.js';
import { UnauthenticatedListenError } from '../../src/auth/open-mode.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { startApi } from '../../src/main.js';
import { openDb } from '../../src/store/db.js';
import { defaultModelsYaml } from '../helpers/app.js';
import type { ErrorEnvelope } from '../helpers/auth.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function dataDir(): { dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-open-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'models.yaml'), defaultModelsYaml());
  const env = {
    PORT: '0',
    DATA_DIR: dir,
    MODELS_FILE: path.join(dir, 'models.yaml'),
    REDIS_URL: inject('redisUrl'),
    QUEUE_PREFIX: `t${Math.random().toString(36).slice(2, 10)}`,
    LOG_LEVEL: 'silent',
  };
  return { dir, env };
}

async function start(env: Record<string, string>) {
  const config = loadConfig(env);
  const api = await startApi(config, createLogger('silent'), config.env.REDIS_URL!);
  cleanup.push(() => api.close());
  return api;
}

describe('open mode (no API keys)', () => {
  it('refuses to listen on a non-loopback HOST', async () => {
    const { env } = dataDir();
    await expect(start({ ...env, HOST: '0.0.0.0' })).rejects.toBeInstanceOf(UnauthenticatedListenError);
  });

  it('listens on a non-loopback HOST with ALLOW_UNAUTHENTICATED=1, and accepts any token', async () => {
    const { env } = dataDir();
    const api = await start({ ...env, HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED: '1' });
    const res = await api.app.inject({
      method: 'GET',
      url: '/v1/files',
      headers: { authorization: 'Bearer whatever' },
    });
    expect(res.statusCode).toBe(200);
    expect((await api.app.inject({ method: 'GET', url: '/v1/files' })).statusCode).toBe(200);
    // Open mode: everyone is the operator (requireAdmin lets a null principal through).
    expect((await api.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });

  it('listens on a non-loopback HOST once a key exists; if every key is revoked later it refuses requests instead of falling open', async () => {
    const { dir, env } = dataDir();
    const db = openDb(path.join(dir, 'db.sqlite'));
    const { key, secret } = createKey(db, { name: 'k' });
    const api = await start({ ...env, HOST: '0.0.0.0' });
    const auth = { authorization: `Bearer ${secret}` };
    expect((await api.app.inject({ method: 'GET', url: '/v1/files', headers: auth })).statusCode).toBe(200);
    revokeKey(db, key.id); // from another connection, as `npm run keys -- revoke` does
    db.$client.close();
    for (const headers of [auth, { authorization: 'Bearer anything' }, {}]) {
      const res = await api.app.inject({ method: 'GET', url: '/v1/files', headers });
      expect(res.statusCode).toBe(401);
      expect(res.json<ErrorEnvelope>().error.code).toBe('invalid_api_key');
    }
    expect((await api.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  it('on loopback, falls back to open mode when the last key is revoked', async () => {
    const { dir, env } = dataDir();
    const api = await start({ ...env, HOST: '127.0.0.1' });
    const db = openDb(path.join(dir, 'db.sqlite'));
    cleanup.push(() => void db.$client.close());
    const { key } = createKey(db, { name: 'k' });
    expect((await api.app.inject({ method: 'GET', url: '/v1/files' })).statusCode).toBe(401);
    revokeKey(db, key.id);
    expect((await api.app.inject({ method: 'GET', url: '/v1/files' })).statusCode).toBe(200);
  });

  it('`main.ts all` exits 1 with a one-line error that says what to do, before starting a private Redis or a worker', async () => {
    const { dir, env } = dataDir();
    const { REDIS_URL: _none, ...noRedis } = env;
    const r = await run(process.execPath, ['--import', 'tsx', 'src/main.ts', 'all'], {
      cwd: ROOT,
      env: { ...process.env, ...noRedis, REDIS_URL: '', HOST: '0.0.0.0' },
      timeout: 90_000,
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('HOST=0.0.0.0');
    expect(lines[0]).toContain('npm run keys -- create');
    expect(lines[0]).toContain('ALLOW_UNAUTHENTICATED=1');
    expect(existsSync(path.join(dir, 'redis'))).toBe(false); // no private redis-server was started (and left behind)
  });
});
