/**
 * bench/scale.ts end to end in its --quick form (its own Redis, API and two worker processes
 * with their engines). Exit code and the shape of the JSON it writes only: no timing thresholds.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-scale-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface ResultFile {
  name: string;
  quick: boolean;
  params: { workers: number; netns: boolean };
  metrics: { id: string; value: unknown; must?: unknown; result: string }[];
  details: { runs: { k: number; n: number; perWorker: Record<string, { served: number }> }[] };
}

describe('bench/scale.ts --quick', () => {
  it(
    'exits 0 and writes S1, S2 as finite numbers, with every worker serving part of each batch',
    { timeout: 300_000 },
    async () => {
      const r = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'bench/scale.ts', '--quick'], {
          cwd: ROOT,
          env: { ...process.env, BENCH_RESULTS_DIR: dir },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let output = '';
        child.stdout.on('data', (d: Buffer) => (output += d.toString()));
        child.stderr.on('data', (d: Buffer) => (output += d.toString()));
        const timer = setTimeout(() => child.kill('SIGTERM'), 280_000);
        child.on('error', reject);
        child.on('exit', (code) => (clearTimeout(timer), resolve({ code, output })));
      });
      expect(r.code, r.output).toBe(0);
      const files = readdirSync(dir).filter((f) => f.startsWith('scale-quick-') && f.endsWith('.json'));
      expect(files, r.output).toHaveLength(1);
      const json = JSON.parse(readFileSync(path.join(dir, files[0]!), 'utf8')) as ResultFile;
      expect(json.name).toBe('scale');
      expect(json.quick).toBe(true);
      expect(json.params.netns).toBe(false);
      expect(json.metrics.map((m) => m.id)).toEqual(['S1', 'S2']);
      for (const m of json.metrics) expect(Number.isFinite(m.value), `${m.id} = ${String(m.value)}`).toBe(true);
      const two = json.details.runs.find((x) => x.k === 2)!;
      expect(Object.keys(two.perWorker).sort()).toEqual(['host-1', 'host-2']);
      for (const [id, w] of Object.entries(two.perWorker)) expect(w.served, id).toBeGreaterThan(0);
      expect(r.output).toContain('| id ');
    },
  );
});
