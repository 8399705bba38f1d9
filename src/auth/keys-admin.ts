import { createHash, randomInt } from 'node:crypto';
import type { Db } from '../store/db.js';
import { createApiKeysRepo, type ApiKeyRow } from '../store/api-keys-repo.js';

/**
 * Creating, listing and revoking API keys: used by `npm run keys` (scripts/keys.ts) and the
 * CLI. They write SQLite directly, from any process; a running server notices within one
 * request (see key-cache.ts).
 */

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** 43 base62 characters: 256 bits of randomness. */
const SECRET_CHARS = 43;
export const SECRET_PREFIX = 'bw-';
/** Characters of the secret kept in clear (`prefix` column), to tell keys apart in lists. */
const DISPLAY_PREFIX_LEN = SECRET_PREFIX.length + 6;
export const PROJECT_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** What is shown of a key: never the secret, never its hash. */
export interface KeyInfo {
  id: string;
  name: string;
  project: string;
  /** The first characters of the secret, e.g. `bw-Ab12Cd`. */
  prefix: string;
  admin: boolean;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

export class KeyAdminError extends Error {
  override name = 'KeyAdminError';
}

/** SHA-256 hex: secrets are 256-bit random, so a fast hash is enough (no dictionary to attack). */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

function randomBase62(n: number): string {
  let out = '';
  // randomInt is uniform (rejection sampling inside), so no modulo bias.
  for (let i = 0; i < n; i++) out += BASE62[randomInt(BASE62.length)];
  return out;
}

export function newSecret(): string {
  return `${SECRET_PREFIX}${randomBase62(SECRET_CHARS)}`;
}

/**
 * How a presented key is shown in errors and logs: its first 5 and last 2 characters.
 * Short strings (not one of our keys) are shown as `…` only, since 7 characters of them
 * would be most of the secret.
 */
export function maskSecret(secret: string): string {
  return secret.length >= 20 ? `${secret.slice(0, 5)}…${secret.slice(-2)}` : '…';
}

const toInfo = (r: ApiKeyRow): KeyInfo => ({
  id: r.id,
  name: r.name,
  project: r.project,
  prefix: r.prefix,
  admin: r.admin,
  createdAt: r.createdAt,
  lastUsedAt: r.lastUsedAt,
  revokedAt: r.revokedAt,
});

const nowS = () => Math.floor(Date.now() / 1000);

/**
 * Creates a key. The secret is returned here once and never stored: only its hash is.
 * `project` defaults to the key's own id (a project of one key).
 */
export function createKey(
  db: Db,
  opts: { name: string; project?: string; admin?: boolean },
): { key: KeyInfo; secret: string } {
  const name = opts.name.trim();
  if (!name || name.length > 200)
    throw new KeyAdminError('A key needs a name of 1 to 200 characters (what uses it, e.g. "ci").');
  if (opts.project !== undefined && !PROJECT_RE.test(opts.project)) {
    throw new KeyAdminError(
      `Invalid project "${opts.project.slice(0, 80)}": use 1 to 64 letters, digits, ".", "_" or "-".`,
    );
  }
  const repo = createApiKeysRepo(db);
  const id = `key_${randomBase62(16)}`;
  const secret = newSecret();
  const row = {
    id,
    name,
    project: opts.project ?? id,
    hash: hashSecret(secret),
    prefix: secret.slice(0, DISPLAY_PREFIX_LEN),
    admin: opts.admin ?? false,
    createdAt: nowS(),
  };
  repo.insert(row);
  return { key: toInfo({ ...row, lastUsedAt: null, revokedAt: null }), secret };
}

export function listKeys(db: Db): KeyInfo[] {
  return createApiKeysRepo(db).list().map(toInfo);
}

/**
 * Revokes a key by id or display prefix. Revoking a revoked key returns it unchanged. A
 * prefix that matches several keys is refused (pass the id).
 */
export function revokeKey(db: Db, idOrPrefix: string): KeyInfo {
  const repo = createApiKeysRepo(db);
  const found = repo.findByIdOrPrefix(idOrPrefix);
  if (found.length === 0)
    throw new KeyAdminError(
      `No key with id or prefix "${idOrPrefix.slice(0, 80)}". List keys with: npm run keys -- list`,
    );
  if (found.length > 1)
    throw new KeyAdminError(
      `The prefix "${idOrPrefix}" matches ${found.length} keys (${found.map((k) => k.id).join(', ')}); pass the key's id.`,
    );
  const key = found[0]!;
  repo.revoke(key.id, nowS());
  return toInfo(repo.findByIdOrPrefix(key.id).find((k) => k.id === key.id)!);
}
