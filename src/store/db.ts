import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { ROOT } from '../paths.js';
import * as schema from './schema.js';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

const MIGRATIONS = path.join(ROOT, 'migrations');

/**
 * Opens (creating if needed) the SQLite database and applies every migration.
 * WAL + synchronous=NORMAL: a committed result survives a process crash (SIGKILL); only an
 * OS crash can lose the last transactions, which workers then redo.
 */
export function openDb(file: string): Db {
  mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const db: Db = drizzle<typeof schema>(sqlite, { schema });
  migrate(db, { migrationsFolder: MIGRATIONS });
  return db;
}
