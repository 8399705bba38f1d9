import { and, asc, eq, isNull, or, sql } from 'drizzle-orm';
import type { Db } from './db.js';
import { apiKeys } from './schema.js';

export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type NewApiKeyRow = typeof apiKeys.$inferInsert;

export interface ApiKeysRepo {
  insert(row: NewApiKeyRow): void;
  /** The key whose secret hashes to `hash`, revoked or not (the caller decides what revoked means). */
  findByHash(hash: string): ApiKeyRow | undefined;
  /** Keys whose id or display prefix is exactly `idOrPrefix`. */
  findByIdOrPrefix(idOrPrefix: string): ApiKeyRow[];
  list(): ApiKeyRow[];
  /** Whether at least one key is not revoked: the server then requires a key on every request. */
  hasActive(): boolean;
  /** Sets revoked_at once; false if the key was already revoked or does not exist. */
  revoke(id: string, nowS: number): boolean;
  touch(id: string, nowS: number): void;
  /**
   * Changes whenever keys may have changed: SQLite's `PRAGMA data_version` moves when another
   * connection (another process, such as `npm run keys`) commits, and a counter moves on this
   * connection's own inserts and revokes (which data_version does not see). Caches compare it.
   */
  version(): string;
}

/** Per connection: key writes made through it, which its own data_version does not count. */
const localWrites = new WeakMap<object, number>();

export function createApiKeysRepo(db: Db): ApiKeysRepo {
  const dataVersion = db.$client.prepare('PRAGMA data_version').pluck();
  const active = db.$client.prepare('SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1').pluck();
  const wrote = () => localWrites.set(db.$client, (localWrites.get(db.$client) ?? 0) + 1);
  return {
    insert: (row) => {
      db.insert(apiKeys).values(row).run();
      wrote();
    },
    findByHash: (hash) => db.select().from(apiKeys).where(eq(apiKeys.hash, hash)).get(),
    findByIdOrPrefix: (s) =>
      db
        .select()
        .from(apiKeys)
        .where(or(eq(apiKeys.id, s), eq(apiKeys.prefix, s)))
        .all(),
    list: () =>
      db
        .select()
        .from(apiKeys)
        .orderBy(asc(apiKeys.createdAt), sql`rowid`)
        .all(),
    hasActive: () => active.get() !== undefined,
    revoke: (id, nowS) => {
      const changed =
        db
          .update(apiKeys)
          .set({ revokedAt: nowS })
          .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
          .run().changes > 0;
      if (changed) wrote();
      return changed;
    },
    touch: (id, nowS) => {
      db.update(apiKeys).set({ lastUsedAt: nowS }).where(eq(apiKeys.id, id)).run();
    },
    version: () => `${dataVersion.get() as number}:${localWrites.get(db.$client) ?? 0}`,
  };
}
