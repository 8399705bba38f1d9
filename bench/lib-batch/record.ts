/**
 * Records batch benchmark runs on a server (POST /ops/benchmarks) so the dashboard shows them
 * per model: from a run that just finished (bench/batch.ts --record URL) or from result files
 * written earlier (bench/batch.ts --import-results URL [files...]).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { percentile } from './report.js';

/** The sim's output tokens per request in the bench stack (stack.ts default; batch.ts sets no other). */
const SIM_OUTPUT_TOKENS = 16;

export interface BenchmarkRunBody {
  model: string;
  kind: string;
  requests_per_s: number | null;
  tokens_per_s: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  created_at: number;
  details: Record<string, unknown>;
}

interface ResultsFile {
  name: string;
  date: string;
  machine?: Record<string, unknown>;
  quick?: boolean;
  params?: { slots?: number; latSlots?: number; latMs?: number };
  metrics: { id: string; value: number; unit: string; result?: string }[];
  details?: {
    p5?: { n: number; best?: { rate: number; outputTokens?: number; phases?: { totalMs: number } } };
    p9p10?: { n: number; runMs: number; meanLatencyMs?: number; latencyP50Ms?: number; latencyP95Ms?: number };
  };
}

const r1 = (v: number) => Math.round(v * 10) / 10;

/** The runs one bench/batch.ts result file describes: P5 (throughput) and P9/P10 (a latency-bound batch). */
export function runsFromResults(
  res: ResultsFile,
  source: string,
  models = { fast: 'bench-fast', lat: 'bench-lat' },
): BenchmarkRunBody[] {
  if (res.name !== 'batch') return [];
  const at = Math.floor(Date.parse(res.date) / 1000);
  const common = {
    machine: res.machine ?? null,
    quick: res.quick ?? false,
    params: res.params ?? null,
    source: path.basename(source),
  };
  const runs: BenchmarkRunBody[] = [];
  const p5 = res.details?.p5;
  const p5m = res.metrics.find((m) => m.id === 'P5');
  if (p5m && Number.isFinite(p5m.value)) {
    const totalMs = p5?.best?.phases?.totalMs;
    const outTokens = p5?.best?.outputTokens ?? (p5 ? p5.n * SIM_OUTPUT_TOKENS : undefined);
    runs.push({
      model: models.fast,
      kind: 'batch',
      requests_per_s: p5m.value,
      tokens_per_s: totalMs && outTokens ? r1((outTokens / totalMs) * 1000) : null,
      latency_p50_ms: null,
      latency_p95_ms: null,
      created_at: at,
      details: {
        ...common,
        metric: 'P5 whole batch, upload → completed',
        n: p5?.n ?? null,
        slots: res.params?.slots ?? null,
      },
    });
  }
  const p9 = res.details?.p9p10;
  if (p9 && p9.runMs > 0) {
    const metrics = Object.fromEntries(
      res.metrics.filter((m) => m.id === 'P9' || m.id === 'P10').map((m) => [m.id, `${m.value} ${m.unit}`]),
    );
    runs.push({
      model: models.lat,
      kind: 'batch-latency',
      requests_per_s: r1((p9.n / p9.runMs) * 1000),
      tokens_per_s: r1(((p9.n * SIM_OUTPUT_TOKENS) / p9.runMs) * 1000),
      latency_p50_ms: p9.latencyP50Ms ?? null,
      latency_p95_ms: p9.latencyP95Ms ?? null,
      created_at: at,
      details: {
        ...common,
        metric: 'P9/P10 latency-bound batch (in_progress → last served)',
        n: p9.n,
        meanLatencyMsInSim: p9.meanLatencyMs ?? null,
        ...metrics,
      },
    });
  }
  return runs;
}

/** bench/results/batch-*.json, oldest first. */
export function batchResultFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^batch(-quick)?-.*\.json$/.test(n))
    .sort()
    .map((n) => path.join(dir, n));
}

export function readResults(file: string): ResultsFile {
  return JSON.parse(readFileSync(file, 'utf8')) as ResultsFile;
}

/** Posts runs to `<url>/ops/benchmarks` (with an admin key when the server has keys). */
export async function postRuns(
  url: string,
  runs: readonly BenchmarkRunBody[],
  apiKey: string | undefined,
): Promise<string[]> {
  const ids: string[] = [];
  for (const run of runs) {
    const res = await fetch(new URL('/ops/benchmarks', url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
      body: JSON.stringify(run),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`POST ${url}/ops/benchmarks answered ${res.status}: ${text.slice(0, 300)}`);
    ids.push((JSON.parse(text) as { id: string }).id);
  }
  return ids;
}

/** p50/p95 of the per-request latency the worker recorded for a batch (GET /ops/batches/:id/results). */
export async function batchLatencies(
  baseUrl: string,
  batchId: string,
): Promise<{ p50: number; p95: number; n: number } | null> {
  const values: number[] = [];
  for (let offset = 0; ; offset += 500) {
    const res = await fetch(`${baseUrl}/ops/batches/${batchId}/results?status=ok&limit=500&offset=${offset}`);
    if (!res.ok) return null;
    const page = (await res.json()) as { data: { latency_ms: number | null }[]; has_more: boolean };
    for (const r of page.data) if (typeof r.latency_ms === 'number') values.push(r.latency_ms);
    if (!page.has_more) break;
  }
  if (values.length === 0) return null;
  return { p50: percentile(values, 50), p95: percentile(values, 95), n: values.length };
}
