/**
 * bench/startup.ts end to end with one run per variant (it builds dist/ when stale and starts
 * its own Redis, APIs, workers and simulators). Presence and format only: no timing thresholds.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-startup-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('npm run bench:startup -- --runs 1', () => {
  it('exits 0 and writes a time and an RSS for every process and variant', { timeout: 180_000 }, async () => {
    const file = path.join(dir, 'startup.json');
    await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/startup.ts', '--runs', '1', '--out', file], {
      cwd: ROOT,
      timeout: 170_000,
    });
    const json = JSON.parse(readFileSync(file, 'utf8')) as {
      runs: number;
      samples: Record<string, { ms: number[]; rssMb: number[] }>;
    };
    expect(json.runs).toBe(1);
    const keys = ['api', 'worker', 'sim'].flatMap((k) => [`${k} tsx`, `${k} compiled`]);
    expect(Object.keys(json.samples).sort()).toEqual(keys.sort());
    for (const k of keys) {
      const s = json.samples[k]!;
      expect(s.ms.length, k).toBe(1);
      expect(s.ms[0], k).toBeGreaterThan(0);
      if (process.platform === 'linux') expect(s.rssMb[0], k).toBeGreaterThan(10);
    }
  });
});
