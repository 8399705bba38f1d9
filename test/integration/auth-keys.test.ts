import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AuthenticationError } from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createKey, hashSecret, KeyAdminError, listKeys, revokeKey } from '../../src/auth/keys-admin.js';
import { createKeyAuthenticator } from '../../src/auth/key-cache.js';
import { createApiKeysRepo } from '../../src/store/api-keys-repo.js';
import { openDb, type Db } from '../../src/store/db.js';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { clientWith } from '../helpers/auth.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');

/** `npm run keys -- ...` as a separate process, the way an operator runs it. */
async function keysCli(dataDir: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, ['--import', 'tsx', 'scripts/keys.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, DATA_DIR: dataDir },
    timeout: 60_000,
  });
}

const dirs: string[] = [];
const dbs: Db[] = [];
function tempDb(): { dir: string; db: Db } {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-keys-'));
  dirs.push(dir);
  const db = openDb(path.join(dir, 'db.sqlite'));
  dbs.push(db);
  return { dir, db };
}
afterEach(() => {
  for (const db of dbs.splice(0)) db.$client.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('keys admin', () => {
  it('stores only a hash and a display prefix, never the secret', () => {
    const { db } = tempDb();
    const { key, secret } = createKey(db, { name: 'ci', project: 'team-a' });
    const row = db.$client.prepare('SELECT * FROM api_keys WHERE id = ?').get(key.id) as Record<string, unknown>;
    expect(row.hash).toBe(hashSecret(secret));
    expect(secret.startsWith(row.prefix as string)).toBe(true);
    expect((row.prefix as string).length).toBeLessThan(12);
    expect(JSON.stringify(row)).not.toContain(secret);
    expect(key).toMatchObject({ name: 'ci', project: 'team-a', admin: false, revokedAt: null });
  });

  it("defaults the project to the key's own id", () => {
    const { db } = tempDb();
    const { key } = createKey(db, { name: 'solo' });
    expect(key.project).toBe(key.id);
  });

  it('revokes by id or prefix, refuses unknown and ambiguous ones, and lists everything', () => {
    const { db } = tempDb();
    const a = createKey(db, { name: 'a' });
    const b = createKey(db, { name: 'b', admin: true });
    expect(revokeKey(db, a.key.prefix).revokedAt).not.toBeNull();
    expect(revokeKey(db, b.key.id).revokedAt).not.toBeNull();
    expect(() => revokeKey(db, 'key_nope')).toThrow(KeyAdminError);
    db.$client.prepare("UPDATE api_keys SET prefix = 'bw-same'").run();
    expect(() => revokeKey(db, 'bw-same')).toThrow(/matches 2 keys/);
    expect(listKeys(db).map((k) => k.name)).toEqual(['a', 'b']);
    expect(() => createKey(db, { name: 'x', project: 'bad project!' })).toThrow(KeyAdminError);
    expect(() => createKey(db, { name: '  ' })).toThrow(KeyAdminError);
  });
});

describe('key cache', () => {
  it('sees keys written by another connection (another process) on the next check', () => {
    const { dir, db } = tempDb();
    const other = openDb(path.join(dir, 'db.sqlite'));
    dbs.push(other);
    const authn = createKeyAuthenticator(createApiKeysRepo(db));
    expect(authn.keysConfigured()).toBe(false);
    const { key, secret } = createKey(other, { name: 'x', project: 'p' });
    expect(authn.keysConfigured()).toBe(true);
    expect(authn.check(secret)).toEqual({ ok: true, principal: { keyId: key.id, project: 'p', admin: false } });
    revokeKey(other, key.id);
    expect(authn.check(secret)).toEqual({ ok: false, reason: 'revoked' });
    expect(authn.keysConfigured()).toBe(false);
    expect(authn.check('bw-unknown')).toEqual({ ok: false, reason: 'unknown' });
  });

  it('answers one request with one call: open mode, no key sent, or the key check', () => {
    const { db } = tempDb();
    const authn = createKeyAuthenticator(createApiKeysRepo(db));
    expect(authn.authenticate('anything')).toEqual({ mode: 'open' });
    const { key, secret } = createKey(db, { name: 'x', project: 'p', admin: true });
    expect(authn.authenticate(undefined)).toEqual({ mode: 'keys', check: null });
    expect(authn.authenticate('anything')).toEqual({ mode: 'keys', check: { ok: false, reason: 'unknown' } });
    expect(authn.authenticate(secret)).toEqual({
      mode: 'keys',
      check: { ok: true, principal: { keyId: key.id, project: 'p', admin: true } },
    });
  });

  it('sees keys written through its own connection too (which data_version does not count)', () => {
    const { db } = tempDb();
    const authn = createKeyAuthenticator(createApiKeysRepo(db));
    expect(authn.keysConfigured()).toBe(false);
    const { key, secret } = createKey(db, { name: 'x' });
    expect(authn.check(secret).ok).toBe(true);
    revokeKey(db, key.id);
    expect(authn.check(secret)).toEqual({ ok: false, reason: 'revoked' });
  });

  it('writes last_used_at at most once a minute per key', () => {
    const { db } = tempDb();
    let now = 1_000_000_000_000;
    const repo = createApiKeysRepo(db);
    let touches = 0;
    const counting = { ...repo, touch: (id: string, s: number) => (touches++, repo.touch(id, s)) };
    const authn = createKeyAuthenticator(counting, { now: () => now });
    const { key, secret } = createKey(db, { name: 'x' });
    for (let i = 0; i < 50; i++) {
      expect(authn.check(secret).ok).toBe(true);
      now += 1000; // 50 requests over 50 s
    }
    expect(touches).toBe(1);
    now += 11_000;
    authn.check(secret);
    expect(touches).toBe(2);
    expect(listKeys(db).find((k) => k.id === key.id)?.lastUsedAt).toBe(Math.floor(now / 1000));
  });
});

describe('npm run keys against a running server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('creates, lists and revokes keys from another process; the server notices on its next request', async () => {
    // Open mode: any token works.
    await expect(clientWith(server, 'anything').files.list()).resolves.toBeDefined();

    const created = await keysCli(server.dataDir, 'create', '--name', 'ci', '--project', 'team-a');
    const key = JSON.parse(created.stdout) as { id: string; secret: string; project: string; prefix: string };
    expect(key.secret).toMatch(/^bw-[A-Za-z0-9]{40,}$/);
    expect(key.project).toBe('team-a');
    expect(created.stderr).toContain('not shown again');

    // No wait and no retry: the very first request after the CLI exits sees the new key
    // (the brief allows up to ~2 s; the data_version check makes it immediate).
    await expect(clientWith(server, 'anything').files.list()).rejects.toBeInstanceOf(AuthenticationError);
    await expect(clientWith(server, key.secret).files.list()).resolves.toBeDefined();

    const table = await keysCli(server.dataDir, 'list');
    expect(table.stdout).toMatch(/^ID +NAME +PROJECT/);
    expect(table.stdout).toContain(key.id);
    expect(table.stdout).toContain('team-a');
    expect(table.stdout).not.toContain(key.secret);
    const json = JSON.parse((await keysCli(server.dataDir, 'list', '--json')).stdout) as {
      id: string;
      lastUsedAt: number | null;
    }[];
    expect(json.find((k) => k.id === key.id)?.lastUsedAt).not.toBeNull();
    expect(JSON.stringify(json)).not.toContain(key.secret);

    // A second key keeps the server in key mode after the first is revoked.
    const other = JSON.parse((await keysCli(server.dataDir, 'create', '--name', 'other')).stdout) as { secret: string };
    const revoked = JSON.parse((await keysCli(server.dataDir, 'revoke', key.id)).stdout) as {
      revokedAt: number | null;
    };
    expect(revoked.revokedAt).not.toBeNull();
    const err = await clientWith(server, key.secret)
      .files.list()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as AuthenticationError).code).toBe('invalid_api_key');
    await expect(clientWith(server, other.secret).files.list()).resolves.toBeDefined();

    await expect(keysCli(server.dataDir, 'revoke', 'key_doesnotexist')).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('No key with id'),
    });
  });
});

describe('logs', () => {
  it('never contain a presented key, valid, revoked or unknown; requests log the key id instead', async () => {
    const server = await startTestServer({ captureLogs: true });
    try {
      const good = createKey(server.app.deps.db, { name: 'good', project: 'p' });
      const old = createKey(server.app.deps.db, { name: 'old' });
      revokeKey(server.app.deps.db, old.key.id);
      const unknown = `bw-${'x'.repeat(43)}`;
      for (const secret of [good.secret, old.secret, unknown]) {
        await server.app.inject({ method: 'GET', url: '/v1/files', headers: { authorization: `Bearer ${secret}` } });
      }
      const text = JSON.stringify(server.logs);
      for (const secret of [good.secret, old.secret, unknown]) {
        expect(text).not.toContain(secret);
        expect(text).not.toContain(secret.slice(3, 23)); // no long piece of it either
      }
      expect(server.logs.some((l) => l.keyId === good.key.id && l.project === 'p')).toBe(true);
      const refused = server.logs.filter((l) => l.msg === 'api key refused');
      expect(refused.map((l) => l.reason).sort()).toEqual(['revoked', 'unknown']);
    } finally {
      await server.close();
    }
  });
});
