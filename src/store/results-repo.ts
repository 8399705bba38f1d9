import { open } from 'node:fs/promises';
import type { Db } from './db.js';

/** One batch request as the results view reads it (its body stays in the input file). */
export interface ResultRecord {
  idx: number;
  customId: string;
  line: number;
  offset: number;
  length: number;
  state: string;
  result: string | null;
  isError: number | null;
  latencyMs: number | null;
  starred: number;
}

export interface ResultFilter {
  /** ok: a 2xx answer; error: anything in the error file. Unfinished requests match neither. */
  status?: 'ok' | 'error';
  starred?: boolean;
}

export type ResultsRepo = ReturnType<typeof createResultsRepo>;

const BASE = `r.idx, r.custom_id AS customId, r.line, r.offset, r.length, r.state, r.result, r.is_error AS isError, r.latency_ms AS latencyMs`;
/**
 * The stars join only when the filter is on stars: without it a count of a 100,000-row batch
 * took a tenth of the time (24 vs 240 ms on the loaded 2-core machine), and the page's stars
 * are then read in one lookup of its custom_ids.
 */
const joined = (f: ResultFilter) => f.starred !== undefined;
const selectFrom = (f: ResultFilter) =>
  joined(f)
    ? `SELECT ${BASE}, (s.custom_id IS NOT NULL) AS starred FROM batch_requests r LEFT JOIN result_stars s ON s.batch_id = r.batch_id AND s.custom_id = r.custom_id`
    : `SELECT ${BASE}, 0 AS starred FROM batch_requests r`;

function where(f: ResultFilter): string {
  const parts = ['r.batch_id = ?'];
  if (f.status === 'ok') parts.push(`r.state = 'done' AND r.is_error = 0`);
  if (f.status === 'error') parts.push(`r.state = 'done' AND r.is_error = 1`);
  if (f.starred === true) parts.push('s.custom_id IS NOT NULL');
  if (f.starred === false) parts.push('s.custom_id IS NULL');
  return `WHERE ${parts.join(' AND ')}`;
}

/** Reads batch_requests for the dashboard: pages, scans for search, and lookups by custom_id. */
export function createResultsRepo(db: Db) {
  const client = db.$client;
  /** Sets `starred` on rows read without the join. */
  const withStars = (batchId: string, rows: ResultRecord[]): ResultRecord[] => {
    if (rows.length === 0) return rows;
    const ids = client
      .prepare(
        `SELECT custom_id AS c FROM result_stars WHERE batch_id = ? AND custom_id IN (${rows.map(() => '?').join(', ')})`,
      )
      .all(batchId, ...rows.map((r) => r.customId)) as { c: string }[];
    const set = new Set(ids.map((x) => x.c));
    for (const r of rows) r.starred = set.has(r.customId) ? 1 : 0;
    return rows;
  };
  return {
    /** Input order; `offset`/`limit` page through the rows matching `filter`. */
    page(batchId: string, filter: ResultFilter, offset: number, limit: number): ResultRecord[] {
      const rows = client
        .prepare(`${selectFrom(filter)} ${where(filter)} ORDER BY r.idx LIMIT ? OFFSET ?`)
        .all(batchId, limit, offset) as ResultRecord[];
      return joined(filter) ? rows : withStars(batchId, rows);
    },
    count(batchId: string, filter: ResultFilter): number {
      const from = joined(filter)
        ? 'FROM batch_requests r LEFT JOIN result_stars s ON s.batch_id = r.batch_id AND s.custom_id = r.custom_id'
        : 'FROM batch_requests r';
      return (client.prepare(`SELECT count(*) AS n ${from} ${where(filter)}`).get(batchId) as { n: number }).n;
    },
    /** Every matching row in input order, 500 at a time (for search, which reads each input). */
    *scan(batchId: string, filter: ResultFilter): IterableIterator<ResultRecord[]> {
      const st = client.prepare(`${selectFrom(filter)} ${where(filter)} AND r.idx > ? ORDER BY r.idx LIMIT 500`);
      let after = -1;
      for (;;) {
        const rows = st.all(batchId, after) as ResultRecord[];
        if (rows.length > 0) yield joined(filter) ? rows : withStars(batchId, rows);
        if (rows.length < 500) return;
        after = rows[rows.length - 1]!.idx;
      }
    },
    byCustomIds(batchId: string, customIds: readonly string[]): ResultRecord[] {
      if (customIds.length === 0) return [];
      const marks = customIds.map(() => '?').join(', ');
      const rows = client
        .prepare(`${selectFrom({})} WHERE r.batch_id = ? AND r.custom_id IN (${marks}) ORDER BY r.idx`)
        .all(batchId, ...customIds) as ResultRecord[];
      return withStars(batchId, rows);
    },
    /** Every custom_id of a batch with its idx, in input order (one sequential read of the primary key). */
    customIdIndex(batchId: string): Map<string, number> {
      const rows = client
        .prepare(`SELECT custom_id, idx FROM batch_requests WHERE batch_id = ? ORDER BY idx`)
        .raw()
        .all(batchId) as [string, number][];
      return new Map(rows);
    },
    /** Rows by idx (primary key lookups), in input order. */
    byIdxs(batchId: string, idxs: readonly number[]): ResultRecord[] {
      if (idxs.length === 0) return [];
      const rows = client
        .prepare(
          `${selectFrom({})} WHERE r.batch_id = ? AND r.idx IN (${idxs.map(() => '?').join(', ')}) ORDER BY r.idx`,
        )
        .all(batchId, ...idxs) as ResultRecord[];
      return withStars(batchId, rows);
    },
  };
}

/**
 * The input lines of `rows` (JSON text), read from the input file at their stored offsets:
 * one positional read per run of rows that lie within 1 MiB of each other. A missing file
 * (purged after the batch ended) gives an empty map.
 */
export async function readInputLines(
  path: string,
  rows: readonly Pick<ResultRecord, 'idx' | 'offset' | 'length'>[],
): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  if (rows.length === 0) return out;
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return out;
  }
  try {
    const sorted = [...rows].sort((a, b) => a.offset - b.offset);
    let i = 0;
    while (i < sorted.length) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1]!.offset + sorted[j + 1]!.length - sorted[i]!.offset <= 1 << 20) j++;
      const first = sorted[i]!.offset;
      const span = sorted[j]!.offset + sorted[j]!.length - first;
      const buf = Buffer.allocUnsafe(span);
      const { bytesRead } = await fh.read(buf, 0, span, first);
      for (let k = i; k <= j; k++) {
        const r = sorted[k]!;
        if (r.offset - first + r.length <= bytesRead)
          out.set(r.idx, buf.toString('utf8', r.offset - first, r.offset - first + r.length));
      }
      i = j + 1;
    }
  } finally {
    await fh.close();
  }
  return out;
}
