import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/app.js';

/** bench/batch.ts records its runs on a server (--record) and imports earlier result files (--import-results). */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function bench(
  args: string[],
  env: Record<string, string>,
  timeoutMs: number,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/batch.ts', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

let server: TestServer;
let dir: string;
beforeAll(async () => {
  server = await startTestServer();
  dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-rec-'));
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const runs = async (model: string) =>
  ((await (await fetch(`${server.baseUrl}/ops/benchmarks?model=${model}`)).json()) as { data: Record<string, any>[] })
    .data;

describe('bench/batch.ts and /ops/benchmarks', () => {
  it('imports an earlier result file as one run per benchmarked model', async () => {
    const file = path.join(dir, 'batch-2026-11-30T10-00-00-000Z.json');
    writeFileSync(
      file,
      JSON.stringify({
        name: 'batch',
        date: '2026-11-30T10:00:00.000Z',
        quick: false,
        machine: { cores: 2 },
        params: { n: 50000, slots: 64 },
        metrics: [
          { id: 'P5', value: 3120, unit: 'req/s' },
          { id: 'P9', value: 97.5, unit: '%' },
          { id: 'P10', value: 1.02, unit: '×' },
        ],
        details: {
          p5: { n: 50000, best: { rate: 3120, phases: { totalMs: 16025 } } },
          p9p10: { n: 6400, runMs: 20500, meanLatencyMs: 50.4 },
        },
      }),
    );
    const r = await bench(['--import-results', server.baseUrl, file], {}, 60_000);
    expect(r.code, r.output).toBe(0);
    const fast = await runs('bench-fast');
    expect(fast).toHaveLength(1);
    expect(fast[0]).toMatchObject({
      kind: 'batch',
      requests_per_s: 3120,
      created_at: Date.parse('2026-11-30T10:00:00Z') / 1000,
    });
    // 50,000 requests × 16 tokens in 16.025 s.
    expect(fast[0]!.tokens_per_s).toBeCloseTo(49_922, -1);
    const lat = await runs('bench-lat');
    expect(lat[0]).toMatchObject({ kind: 'batch-latency', requests_per_s: 312.2 });
    expect(lat[0]!.details).toMatchObject({ P9: '97.5 %', source: path.basename(file) });
  });

  it('records a run it just made, with the latency percentiles the worker measured', { timeout: 240_000 }, async () => {
    const r = await bench(
      ['--quick', '--only', 'p9', '--lat-n', '64', '--lat-slots', '8', '--lat-ms', '20', '--record', server.baseUrl],
      { BENCH_RESULTS_DIR: dir },
      200_000,
    );
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/recorded 1 run/);
    const lat = await runs('bench-lat');
    const fresh = lat.find((x) => x.details.quick === true)!;
    expect(fresh.details.n).toBe(64);
    // The sim answers after ttft 20 ms: the worker-measured latency cannot be below that.
    expect(fresh.latency_p50_ms).toBeGreaterThanOrEqual(20);
    expect(fresh.latency_p95_ms).toBeGreaterThanOrEqual(fresh.latency_p50_ms);
  });
});
