import type { ApiKeysRepo, ApiKeyRow } from '../store/api-keys-repo.js';
import { hashSecret } from './keys-admin.js';
import type { Principal } from './principal.js';

export type KeyCheck = { ok: true; principal: Principal } | { ok: false; reason: 'unknown' | 'revoked' };

/** What one request's credentials come to: open mode (no active key), no key sent, or a key check. */
export type AuthResult = { mode: 'open' } | { mode: 'keys'; check: KeyCheck | null };

export interface KeyAuthenticatorOptions {
  /**
   * last_used_at is written at most this often per key, not on every request.
   * @defaultValue 60000
   */
  touchEveryMs?: number;
  now?: () => number;
}

/** Known keys kept in memory at most; beyond it the cache starts over (unknown tokens are never cached). */
const MAX_CACHED = 10_000;

/**
 * Looks up presented keys. Rows are cached until `repo.version()` changes, which happens when
 * any other process commits to the database (`npm run keys -- create|revoke`) or this
 * connection writes a key: a new or revoked key takes effect on the next request, without
 * polling. Checking the version is one `PRAGMA data_version` (microseconds).
 */
export function createKeyAuthenticator(repo: ApiKeysRepo, opts: KeyAuthenticatorOptions = {}) {
  const touchEveryMs = opts.touchEveryMs ?? 60_000;
  const now = opts.now ?? Date.now;
  let version: string | undefined;
  let configured = false;
  const byHash = new Map<string, ApiKeyRow>();
  const touchedAt = new Map<string, number>();

  function refresh(): void {
    const v = repo.version();
    if (v === version) return;
    version = v;
    byHash.clear();
    configured = repo.hasActive();
  }

  function touch(row: ApiKeyRow): void {
    const t = now();
    const last = touchedAt.get(row.id) ?? (row.lastUsedAt ?? 0) * 1000;
    if (t - last < touchEveryMs) return;
    touchedAt.set(row.id, t);
    repo.touch(row.id, Math.floor(t / 1000));
  }

  function lookup(secret: string): KeyCheck {
    const hash = hashSecret(secret);
    let row = byHash.get(hash);
    if (!row) {
      row = repo.findByHash(hash);
      if (!row) return { ok: false, reason: 'unknown' };
      if (byHash.size >= MAX_CACHED) byHash.clear();
      byHash.set(hash, row);
    }
    if (row.revokedAt !== null) return { ok: false, reason: 'revoked' };
    touch(row);
    return { ok: true, principal: { keyId: row.id, project: row.project, admin: row.admin } };
  }

  return {
    /** At least one key is not revoked: every request (but the public routes) needs a key. */
    keysConfigured(): boolean {
      refresh();
      return configured;
    },

    /** One request: a single version check, then the key (null: none was sent). */
    authenticate(secret: string | undefined): AuthResult {
      refresh();
      if (!configured) return { mode: 'open' };
      return { mode: 'keys', check: secret === undefined ? null : lookup(secret) };
    },

    check(secret: string): KeyCheck {
      refresh();
      return lookup(secret);
    },
  };
}

export type KeyAuthenticator = ReturnType<typeof createKeyAuthenticator>;
