import {
  and,
  asc,
  desc,
  eq,
  exists,
  gt,
  inArray,
  isNotNull,
  isNull,
  lt,
  lte,
  not,
  or,
  sql,
  type SQL,
} from 'drizzle-orm';
import type { Db } from './db.js';
import { batches, files } from './schema.js';

export type FileRow = typeof files.$inferSelect;
export type NewFileRow = typeof files.$inferInsert;

/** Batch statuses in which a worker may still read the input file. */
export const ACTIVE_BATCH_STATUSES = ['validating', 'in_progress', 'finalizing', 'cancelling'] as const;

export interface ListFilesQuery {
  purpose?: string;
  limit: number;
  order: 'asc' | 'desc';
  /** A file id: the page starts after it. */
  after?: string;
  /** Only this project's files (null: those uploaded with no keys). Undefined: every file. */
  owner?: string | null;
}

export interface ListFilesPage {
  rows: FileRow[];
  hasMore: boolean;
  /** True when `after` names no file (never existed, purged, or another owner's): the route answers 400. */
  unknownAfter?: boolean;
}

export interface FilesRepo {
  insert(row: NewFileRow): void;
  /** A live file (not deleted). */
  get(id: string): FileRow | undefined;
  /** The live file this owner uploaded with this Idempotency-Key. */
  findByIdempotencyKey(owner: string | null, key: string): FileRow | undefined;
  /** Any row, deleted or not: a batch keeps reading an input file deleted after it started. */
  getAny(id: string): FileRow | undefined;
  list(query: ListFilesQuery): ListFilesPage;
  /** Hides the file from the API. False if there was no live file with that id. */
  markDeleted(id: string, nowS: number): boolean;
  isInputOfActiveBatch(id: string): boolean;
  /** Live files whose expires_at has passed. */
  listExpired(nowS: number): FileRow[];
  /** Deleted files that no active batch reads: their bytes and rows can go. */
  listDeletedNotInUse(): FileRow[];
  /** Removes the row for good. */
  purge(id: string): void;
}

export function createFilesRepo(db: Db): FilesRepo {
  const activeBatchReads = exists(
    db
      .select({ one: batches.id })
      .from(batches)
      .where(and(eq(batches.inputFileId, files.id), inArray(batches.status, [...ACTIVE_BATCH_STATUSES]))),
  );

  function list({ purpose, limit, order, after, owner }: ListFilesQuery): ListFilesPage {
    const ownedBy = owner === undefined ? undefined : sql`${files.owner} IS ${owner}`;
    const conds: (SQL | undefined)[] = [
      isNull(files.deletedAt),
      purpose === undefined ? undefined : eq(files.purpose, purpose),
      ownedBy,
    ];
    if (after !== undefined) {
      // The cursor row may be deleted since the last page; it still marks the place.
      const cursor = db
        .select({ createdAt: files.createdAt, seq: sql<number>`rowid` })
        .from(files)
        .where(and(eq(files.id, after), ownedBy))
        .get();
      if (!cursor) return { rows: [], hasMore: false, unknownAfter: true };
      const beyond = order === 'asc' ? gt : lt;
      // Ties within one second keep upload order (rowid), not the random order of ids.
      conds.push(
        or(
          beyond(files.createdAt, cursor.createdAt),
          and(eq(files.createdAt, cursor.createdAt), beyond(sql`rowid`, cursor.seq)),
        ),
      );
    }
    const by = order === 'asc' ? asc : desc;
    const rows = db
      .select()
      .from(files)
      .where(and(...conds))
      .orderBy(by(files.createdAt), by(sql`rowid`))
      .limit(limit + 1)
      .all();
    const hasMore = rows.length > limit;
    return { rows: hasMore ? rows.slice(0, limit) : rows, hasMore };
  }

  return {
    insert: (row) => {
      db.insert(files).values(row).run();
    },
    get: (id) =>
      db
        .select()
        .from(files)
        .where(and(eq(files.id, id), isNull(files.deletedAt)))
        .get(),
    findByIdempotencyKey: (owner, key) =>
      db
        .select()
        .from(files)
        .where(and(sql`${files.owner} IS ${owner}`, eq(files.idempotencyKey, key), isNull(files.deletedAt)))
        .get(),
    getAny: (id) => db.select().from(files).where(eq(files.id, id)).get(),
    list,
    markDeleted: (id, nowS) =>
      db
        .update(files)
        .set({ deletedAt: nowS })
        .where(and(eq(files.id, id), isNull(files.deletedAt)))
        .run().changes > 0,
    isInputOfActiveBatch: (id) =>
      db
        .select({ one: batches.id })
        .from(batches)
        .where(and(eq(batches.inputFileId, id), inArray(batches.status, [...ACTIVE_BATCH_STATUSES])))
        .limit(1)
        .get() !== undefined,
    listExpired: (nowS) =>
      db
        .select()
        .from(files)
        .where(and(isNull(files.deletedAt), isNotNull(files.expiresAt), lte(files.expiresAt, nowS)))
        .all(),
    listDeletedNotInUse: () =>
      db
        .select()
        .from(files)
        .where(and(isNotNull(files.deletedAt), not(activeBatchReads)))
        .all(),
    purge: (id) => {
      db.delete(files).where(eq(files.id, id)).run();
    },
  };
}
