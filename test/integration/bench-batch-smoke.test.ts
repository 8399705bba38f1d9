/**
 * bench/batch.ts, bench/ingest.ts and bench/swap.ts end to end in their --quick form (each
 * starts its own Redis, API, worker and engines as child processes). Exit code and the shape
 * of the JSON they write only: no timing thresholds (CI machines vary).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function run(
  script: string,
  resultsDir: string,
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, '--quick'], {
      cwd: ROOT,
      env: { ...process.env, BENCH_RESULTS_DIR: resultsDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

interface ResultFile {
  name: string;
  quick: boolean;
  machine: { cpuModel: string; cores: number; ramBytes: number; node: string };
  metrics: {
    id: string;
    metric: string;
    value: unknown;
    unit: string;
    must?: unknown;
    target?: unknown;
    result: string;
  }[];
}

describe.each([
  { script: 'bench/batch.ts', name: 'batch', ids: ['P5', 'P9', 'P10'] },
  { script: 'bench/ingest.ts', name: 'ingest', ids: ['P6', 'P7'] },
  { script: 'bench/swap.ts', name: 'swap', ids: ['P8', 'P11'] },
])('$script --quick', ({ script, name, ids }) => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), `bw-bench-${name}-`));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`exits 0 and writes ${ids.join(', ')} as finite numbers`, { timeout: 240_000 }, async () => {
    const r = await run(script, dir, 200_000);
    expect(r.signal, r.output).toBeNull();
    expect(r.code, r.output).toBe(0);
    const files = readdirSync(dir).filter((f) => f.startsWith(`${name}-quick-`) && f.endsWith('.json'));
    expect(files, r.output).toHaveLength(1);
    const json = JSON.parse(readFileSync(path.join(dir, files[0]!), 'utf8')) as ResultFile;
    expect(json.name).toBe(name);
    expect(json.quick).toBe(true);
    expect(json.machine.cores).toBeGreaterThan(0);
    expect(json.machine.ramBytes).toBeGreaterThan(0);
    expect(json.machine.node).toMatch(/^v\d+/);
    expect(typeof json.machine.cpuModel).toBe('string');
    expect([...new Set(json.metrics.map((m) => m.id))].sort()).toEqual([...ids].sort());
    for (const m of json.metrics) {
      expect(typeof m.value, `${m.id} ${m.metric}`).toBe('number');
      expect(Number.isFinite(m.value), `${m.id} ${m.metric} = ${String(m.value)}`).toBe(true);
      for (const bound of [m.must, m.target]) if (bound !== undefined) expect(Number.isFinite(bound)).toBe(true);
      expect(['target', 'must', 'FAIL', 'n/a']).toContain(m.result);
    }
    // The table is printed too.
    expect(r.output).toContain('| id ');
  });
});
