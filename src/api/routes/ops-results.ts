import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../errors.js';
import { parseOr400 } from '../zod-params.js';
import { canSee, type Principal } from '../../auth/principal.js';
import { requireAdmin } from '../../auth/plugin.js';
import { BATCH_ID_RE, newRequestId } from '../../domain/ids.js';
import { fineTuningLine, inputOf, inputText, viewResult, type RequestInput } from '../../domain/result-view.js';
import type { BatchRow } from '../../store/batches-repo.js';
import { createResultsRepo, readInputLines, type ResultFilter, type ResultRecord } from '../../store/results-repo.js';
import { createStarsRepo } from '../../store/stars-repo.js';
import { createBenchmarksRepo, type BenchmarkRow } from '../../store/benchmarks-repo.js';

const nowS = () => Math.floor(Date.now() / 1000);
/** Strings in the results view longer than this are cut (the export always has them whole). */
const CLIP_CHARS = 20_000;

const batchIdsParam = (min: number, max: number) =>
  z
    .string()
    .transform((s) => [
      ...new Set(
        s
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean),
      ),
    ])
    .refine((ids) => ids.length >= min && ids.length <= max, {
      message: `give ${min} to ${max} comma-separated batch ids`,
    });

const resultsQuery = z
  .object({
    q: z.string().max(500).optional(),
    status: z.enum(['ok', 'error']).optional(),
    starred: z.enum(['0', '1', 'true', 'false']).optional(),
    offset: z.coerce.number().int().min(0).default(0),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .strict();

const compareQuery = z
  .object({
    batch_ids: batchIdsParam(2, 8),
    offset: z.coerce.number().int().min(0).default(0),
    limit: z.coerce.number().int().min(1).max(200).default(50),
  })
  .strict();

const exportQuery = z.object({ batch_ids: batchIdsParam(1, 100).optional() }).strict();

const benchmarkBody = z
  .object({
    model: z.string().min(1).max(256),
    kind: z.string().min(1).max(64),
    requests_per_s: z.number().nonnegative().nullable().optional(),
    tokens_per_s: z.number().nonnegative().nullable().optional(),
    latency_p50_ms: z.number().nonnegative().nullable().optional(),
    latency_p95_ms: z.number().nonnegative().nullable().optional(),
    /** Unix seconds; defaults to now (set it when importing an older result file). */
    created_at: z.number().int().positive().optional(),
    details: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

const benchmarksQuery = z
  .object({ model: z.string().min(1).optional(), limit: z.coerce.number().int().min(1).max(1000).default(200) })
  .strict();

const principalOf = (req: FastifyRequest): Principal | null => req.principal ?? null;

function clip(v: unknown): unknown {
  if (typeof v === 'string')
    return v.length > CLIP_CHARS ? `${v.slice(0, CLIP_CHARS)}… (${v.length - CLIP_CHARS} more characters)` : v;
  if (Array.isArray(v)) return v.map(clip);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clip(x)]));
  return v;
}

function resultStatus(r: ResultRecord): 'ok' | 'error' | 'pending' {
  if (r.state !== 'done') return 'pending';
  return r.isError ? 'error' : 'ok';
}

/** One row of the results view. */
function toResultRow(r: ResultRecord, input: RequestInput) {
  const v = viewResult(r.result);
  return {
    custom_id: r.customId,
    line: r.line,
    status: resultStatus(r),
    input: clip(input),
    output: v.output === null ? null : (clip(v.output) as string),
    finish_reason: v.finishReason,
    usage: v.usage,
    latency_ms: r.latencyMs,
    error: v.error,
    starred: r.starred === 1,
  };
}

function toBenchmarkObject(b: BenchmarkRow) {
  return {
    id: b.id,
    object: 'benchmark_run' as const,
    model: b.model,
    kind: b.kind,
    created_at: b.createdAt,
    requests_per_s: b.requestsPerS,
    tokens_per_s: b.tokensPerS,
    latency_p50_ms: b.latencyP50Ms,
    latency_p95_ms: b.latencyP95Ms,
    details: b.details ? (JSON.parse(b.details) as Record<string, unknown>) : null,
  };
}

const summary = (b: BatchRow) => ({
  id: b.id,
  status: b.status,
  model: b.model,
  endpoint: b.endpoint,
  created_at: b.createdAt,
  request_counts: { total: b.total, completed: b.completed, failed: b.failed },
});

/**
 * The dashboard's results API (docs/dashboard.md): a batch's answers next to their inputs,
 * search and filters, side-by-side comparison of batches by custom_id, stars, the fine-tuning
 * export of starred answers, and recorded benchmark runs. A batch's results are visible to the
 * project that owns it and to admins; to anyone else the batch does not exist (404). Benchmark
 * runs are operator data (admin key when keys exist).
 */
export default async function opsResultsRoutes(app: FastifyInstance): Promise<void> {
  const { batches, storage } = app.deps;
  const results = createResultsRepo(app.deps.db);
  const stars = createStarsRepo(app.deps.db);
  const benchmarks = createBenchmarksRepo(app.deps.db);

  const visibleBatch = (req: FastifyRequest, id: string, param = 'batch_id'): BatchRow => {
    const b = BATCH_ID_RE.test(id) ? batches.get(id) : undefined;
    if (!b || !canSee(principalOf(req), b.owner)) {
      throw new ApiError(
        'batch_not_found',
        `No batch with id ${id.slice(0, 100)}. List batches with GET /ops/batches?status=all.`,
        param,
      );
    }
    return b;
  };

  const inputsOf = async (b: BatchRow, rows: readonly ResultRecord[]): Promise<Map<number, RequestInput>> => {
    const lines = await readInputLines(storage.pathOf(b.inputFileId), rows);
    return new Map(rows.map((r) => [r.idx, inputOf(lines.get(r.idx) ?? null)]));
  };

  app.get<{ Params: { id: string } }>('/batches/:id/results', async (req) => {
    const b = visibleBatch(req, req.params.id);
    const q = parseOr400(resultsQuery, req.query);
    const filter: ResultFilter = {
      status: q.status,
      starred: q.starred === undefined ? undefined : q.starred === '1' || q.starred === 'true',
    };
    const needle = q.q?.trim().toLowerCase() ?? '';
    let data: ReturnType<typeof toResultRow>[] = [];
    let total: number;
    if (!needle) {
      const rows = results.page(b.id, filter, q.offset, q.limit);
      const inputs = await inputsOf(b, rows);
      data = rows.map((r) => toResultRow(r, inputs.get(r.idx) ?? null));
      total = results.count(b.id, filter);
    } else {
      // Search reads every candidate's input from the file: a linear scan, in pages of 500.
      // A row whose raw JSON cannot contain the needle is skipped before parsing: exact when
      // the raw text has no escapes (a backslash) and the needle has nothing JSON escapes.
      // eslint-disable-next-line no-control-regex -- on purpose: the characters JSON escapes are U+0000-U+001F
      const plain = !/["\\\u0000-\u001f]/.test(needle);
      const mayHold = (raw: string | null | undefined) =>
        raw == null || raw.includes('\\') || raw.toLowerCase().includes(needle);
      const path = storage.pathOf(b.inputFileId);
      total = 0;
      for (const rows of results.scan(b.id, filter)) {
        const lines = await readInputLines(path, rows);
        for (const r of rows) {
          const raw = lines.get(r.idx);
          if (plain && !r.customId.toLowerCase().includes(needle) && !mayHold(raw) && !mayHold(r.result)) continue;
          const input = inputOf(raw ?? null);
          const hay = `${r.customId}\n${inputText(input)}\n${viewResult(r.result).output ?? ''}`.toLowerCase();
          if (!hay.includes(needle)) continue;
          if (total >= q.offset && data.length < q.limit) data.push(toResultRow(r, input));
          total += 1;
        }
      }
    }
    return {
      object: 'list',
      batch: summary(b),
      data,
      total,
      offset: q.offset,
      limit: q.limit,
      has_more: q.offset + data.length < total,
    };
  });

  /**
   * The side-by-side row order of a set of batches: the first batch's custom_ids in its input
   * order, then those only later batches have, in theirs; with each batch's custom_id → idx.
   * A batch's requests never change once validated, so this is built once per set (one
   * sequential read per batch) and kept for the next pages; not while one still validates.
   */
  const compareIndex = new Map<string, { order: string[]; idx: Map<string, number>[] }>();
  const indexFor = (list: readonly BatchRow[]) => {
    const key = list.map((b) => b.id).join(',');
    const hit = compareIndex.get(key);
    if (hit) return hit;
    const idx = list.map((b) => results.customIdIndex(b.id));
    const order = [...idx[0]!.keys()];
    const seen = new Set(order);
    for (const m of idx.slice(1)) {
      for (const c of m.keys()) {
        if (!seen.has(c)) {
          seen.add(c);
          order.push(c);
        }
      }
    }
    const built = { order, idx };
    // Bounded memory: 4 sets, none over 500,000 custom_ids in all (~50 MB); larger ones are rebuilt per page.
    const size = idx.reduce((n, m) => n + m.size, 0);
    if (list.every((b) => b.status !== 'validating') && size <= 500_000) {
      compareIndex.set(key, built);
      if (compareIndex.size > 4) compareIndex.delete(compareIndex.keys().next().value!);
    }
    return built;
  };

  app.get('/compare', async (req) => {
    const q = parseOr400(compareQuery, req.query);
    const list = q.batch_ids.map((id) => visibleBatch(req, id, 'batch_ids'));
    const index = indexFor(list);
    const customIds = index.order.slice(q.offset, q.offset + q.limit);
    const total = index.order.length;
    const perBatch = await Promise.all(
      list.map(async (b, i) => {
        const idxs = customIds.map((c) => index.idx[i]!.get(c)).filter((x): x is number => x !== undefined);
        const rows = results.byIdxs(b.id, idxs);
        return { b, rows: new Map(rows.map((r) => [r.customId, r])), inputs: await inputsOf(b, rows) };
      }),
    );
    const data = customIds.map((customId) => {
      const first = perBatch.find((p) => p.rows.has(customId))!;
      const firstRow = first.rows.get(customId)!;
      return {
        custom_id: customId,
        line: firstRow.line,
        input: clip(first.inputs.get(firstRow.idx) ?? null),
        results: perBatch.map((p) => {
          const r = p.rows.get(customId);
          if (!r) return null;
          const { input: _input, custom_id: _c, line: _l, ...rest } = toResultRow(r, null);
          return { batch_id: p.b.id, ...rest };
        }),
      };
    });
    return {
      object: 'list',
      batches: list.map(summary),
      data,
      total,
      offset: q.offset,
      limit: q.limit,
      has_more: q.offset + data.length < total,
    };
  });

  app.put<{ Params: { id: string; customId: string } }>('/batches/:id/stars/:customId', async (req) => {
    const b = visibleBatch(req, req.params.id);
    const customId = req.params.customId;
    if (results.byCustomIds(b.id, [customId]).length === 0) {
      throw new ApiError(
        'result_not_found',
        `Batch ${b.id} has no request with custom_id ${JSON.stringify(customId.slice(0, 200))}. Star a custom_id from GET /ops/batches/${b.id}/results.`,
        'custom_id',
      );
    }
    stars.star(b.id, customId, nowS());
    return { object: 'result_star', batch_id: b.id, custom_id: customId, starred: true };
  });

  app.delete<{ Params: { id: string; customId: string } }>('/batches/:id/stars/:customId', async (req) => {
    const b = visibleBatch(req, req.params.id);
    stars.unstar(b.id, req.params.customId);
    return { object: 'result_star', batch_id: b.id, custom_id: req.params.customId, starred: false };
  });

  app.get('/stars/export', async (req, reply) => {
    const q = parseOr400(exportQuery, req.query);
    const p = principalOf(req);
    const listed = q.batch_ids?.map((id) => visibleBatch(req, id, 'batch_ids'));
    const starred = stars.list(listed?.map((b) => b.id));
    const byBatch = new Map<string, string[]>();
    for (const s of starred) byBatch.set(s.batchId, [...(byBatch.get(s.batchId) ?? []), s.customId]);
    const lines: string[] = [];
    let skipped = 0;
    for (const [batchId, customIds] of byBatch) {
      const b = batches.get(batchId);
      if (!b || !canSee(p, b.owner)) continue;
      const rows = results.byCustomIds(b.id, customIds);
      skipped += customIds.length - rows.length;
      const inputs = await inputsOf(b, rows);
      for (const r of rows) {
        const v = viewResult(r.result);
        const line =
          r.state === 'done' && !r.isError ? fineTuningLine(inputs.get(r.idx) ?? null, v.output, b.endpoint) : null;
        if (line === null) skipped += 1;
        else lines.push(line);
      }
    }
    return reply
      .header('content-type', 'application/jsonl')
      .header('content-disposition', 'attachment; filename="starred.jsonl"')
      .header('x-batchwright-skipped', String(skipped))
      .send(lines.length > 0 ? `${lines.join('\n')}\n` : '');
  });

  app.get('/benchmarks', async (req) => {
    requireAdmin(req);
    const q = parseOr400(benchmarksQuery, req.query);
    return { object: 'list', data: benchmarks.list({ model: q.model, limit: q.limit }).map(toBenchmarkObject) };
  });

  app.post('/benchmarks', async (req) => {
    requireAdmin(req);
    const body = parseOr400(benchmarkBody, req.body);
    const row = {
      id: `bench_${newRequestId().slice(4)}`,
      model: body.model,
      kind: body.kind,
      createdAt: body.created_at ?? nowS(),
      requestsPerS: body.requests_per_s ?? null,
      tokensPerS: body.tokens_per_s ?? null,
      latencyP50Ms: body.latency_p50_ms ?? null,
      latencyP95Ms: body.latency_p95_ms ?? null,
      details: body.details ? JSON.stringify(body.details) : null,
    };
    benchmarks.insert(row);
    return toBenchmarkObject(row);
  });
}
