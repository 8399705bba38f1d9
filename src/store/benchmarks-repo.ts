import type { Db } from './db.js';
import { benchmarkRuns } from './schema.js';
import { desc, eq, sql } from 'drizzle-orm';

export type BenchmarkRow = typeof benchmarkRuns.$inferSelect;
export type NewBenchmarkRow = typeof benchmarkRuns.$inferInsert;
export type BenchmarksRepo = ReturnType<typeof createBenchmarksRepo>;

/** Benchmark runs per model (bench/ posts them, or imports its result files). */
export function createBenchmarksRepo(db: Db) {
  return {
    insert(row: NewBenchmarkRow): void {
      db.insert(benchmarkRuns).values(row).run();
    },
    /** Newest first. */
    list(opts: { model?: string; limit: number }): BenchmarkRow[] {
      return db
        .select()
        .from(benchmarkRuns)
        .where(opts.model === undefined ? undefined : eq(benchmarkRuns.model, opts.model))
        .orderBy(desc(benchmarkRuns.createdAt), sql`rowid DESC`)
        .limit(opts.limit)
        .all();
    },
  };
}
