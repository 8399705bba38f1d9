import { existsSync } from 'node:fs';
import path from 'node:path';
import { CliError, EXIT } from '../errors.js';

export interface KeysOut {
  out: (line: string) => void;
  err: (line: string) => void;
}

/**
 * DATA_DIR/db.sqlite, which must already exist (a typo must not create an empty database)
 * unless `create` says so: the first key of a server that may not start without one.
 */
async function withDb<T>(dataDir: string, fn: (db: import('../../store/db.js').Db) => T, create = false): Promise<T> {
  const file = path.join(dataDir, 'db.sqlite');
  if (!create && !existsSync(file)) {
    throw new CliError(
      `no database at ${file}: pass the server's data directory with --data-dir (or set DATA_DIR); to set up a new one, add --create-db.`,
      EXIT.usage,
    );
  }
  // Loaded here so the other commands never load better-sqlite3.
  const { openDb } = await import('../../store/db.js');
  const db = openDb(file);
  try {
    return fn(db);
  } finally {
    db.$client.close();
  }
}

async function admin() {
  return import('../../auth/keys-admin.js');
}

function wrapKeyErrors(e: unknown, KeyAdminError: new (...a: never[]) => Error): never {
  if (e instanceof KeyAdminError) throw new CliError(e.message, EXIT.usage);
  throw e;
}

const when = (s: number | null) => (s ? new Date(s * 1000).toISOString().replace('T', ' ').slice(0, 19) : '-');

export async function keysCreate(
  io: KeysOut,
  dataDir: string,
  opts: { name: string; project?: string; admin: boolean; createDb?: boolean },
): Promise<number> {
  const { createKey, KeyAdminError } = await admin();
  const { key, secret } = await withDb(
    dataDir,
    (db) => {
      try {
        return createKey(db, { name: opts.name, ...(opts.project && { project: opts.project }), admin: opts.admin });
      } catch (e) {
        return wrapKeyErrors(e, KeyAdminError);
      }
    },
    opts.createDb,
  );
  io.err(
    `created ${key.id} (name ${key.name}, project ${key.project}${key.admin ? ', admin' : ''}). The secret below is shown once; store it now:`,
  );
  io.out(secret);
  return EXIT.ok;
}

export async function keysList(io: KeysOut, dataDir: string): Promise<number> {
  const { listKeys } = await admin();
  const rows = await withDb(dataDir, (db) => listKeys(db));
  if (!rows.length) {
    io.out('no keys (the server runs in open mode: every caller may do everything)');
    return EXIT.ok;
  }
  io.out(
    `${'ID'.padEnd(22)} ${'PREFIX'.padEnd(10)} ${'NAME'.padEnd(20)} ${'PROJECT'.padEnd(22)} ${'ADMIN'.padEnd(5)} ${'CREATED'.padEnd(19)} ${'LAST USED'.padEnd(19)} REVOKED`,
  );
  for (const k of rows) {
    io.out(
      `${k.id.padEnd(22)} ${k.prefix.padEnd(10)} ${k.name.slice(0, 20).padEnd(20)} ${k.project.slice(0, 22).padEnd(22)} ${(k.admin ? 'yes' : 'no').padEnd(5)} ${when(k.createdAt).padEnd(19)} ${when(k.lastUsedAt).padEnd(19)} ${when(k.revokedAt)}`,
    );
  }
  return EXIT.ok;
}

export async function keysRevoke(io: KeysOut, dataDir: string, idOrPrefix: string): Promise<number> {
  const { revokeKey, KeyAdminError } = await admin();
  const key = await withDb(dataDir, (db) => {
    try {
      return revokeKey(db, idOrPrefix);
    } catch (e) {
      return wrapKeyErrors(e, KeyAdminError);
    }
  });
  io.out(`revoked ${key.id} (${key.name}) at ${when(key.revokedAt)}`);
  return EXIT.ok;
}
