/**
 * Upload + validation of a large batch input file, with the API as a real process.
 *
 *   P6  upload start → batch in_progress, for a 200 MB / 50,000-line file (4,000 bytes a line)
 *   P7  peak growth of the API process's RSS (VmRSS, sampled every 50 ms) during P6, for the
 *       200 MB file and two 20 MB ones: 5,000 lines of the same 4,000 bytes, and 50,000 lines
 *       of 400 bytes; and the change from 20 MB to 200 MB
 *
 * Each file gets a fresh API process (no worker: nothing needs to run), warmed up with one
 * small batch first, so the baseline RSS is that of a server that has served a batch.
 *
 * Usage: node --import tsx bench/ingest.ts [--quick] [--line-bytes 4000] [--lines 50000] [--repeat 1] [--cpu-prof DIR]
 * With --repeat N the 200 MB file is measured N times (a fresh API each) and the best run is reported.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeChatBatch } from './lib-batch/gen.js';
import { flag, numOption, option, printTable, round, writeResults, type Metric } from './lib-batch/report.js';
import { createBatch, rssOf, startStack, uploadFile, waitStatus } from './lib-batch/stack.js';

const quick = flag('quick');
const LINE_BYTES = numOption('line-bytes', quick ? 1000 : 4000);
const BIG_LINES = numOption('lines', quick ? 4000 : 50_000);
const SMALL_LINES = Math.round(BIG_LINES / 10);
const REPEAT = numOption('repeat', 1);
const cpuProfDir = option('cpu-prof');
const MODEL = 'bench-ingest';
const MB = 1e6;

interface Run {
  lines: number;
  bytes: number;
  uploadMs: number;
  validateMs: number;
  totalMs: number;
  baselineRss: number;
  peakRss: number;
  growth: number;
  samples: number;
  /** From the API's 'batch validated' log line: reading + checking the file, then the SQLite insert. */
  readMs: number | null;
  insertMs: number | null;
}

async function measure(dir: string, lines: number, lineBytes = LINE_BYTES): Promise<Run> {
  const file = path.join(dir, `in-${lines}.jsonl`);
  const bytes = writeChatBatch(file, lines, MODEL, lineBytes);
  const warmFile = path.join(dir, 'warm.jsonl');
  writeChatBatch(warmFile, 200, MODEL, LINE_BYTES, 'warm');
  const stack = await startStack({
    models: [{ id: MODEL, slots: 64 }],
    worker: false,
    apiLogLevel: 'info', // 'batch validated' carries the read/insert split; a handful of lines
    ...(cpuProfDir && { cpuProfDir: path.resolve(cpuProfDir) }),
  });
  try {
    const warm = await uploadFile(stack.baseUrl, warmFile);
    const wb = await createBatch(stack.baseUrl, warm.id);
    await waitStatus(stack.baseUrl, wb.id, ['in_progress'], { pollMs: 20 });
    await sleep(1000); // let the warm-up's garbage go
    const pid = stack.api.pid;
    const before: number[] = [];
    for (let i = 0; i < 5; i++) {
      before.push(rssOf(pid) ?? NaN);
      await sleep(50);
    }
    const baselineRss = Math.min(...before);
    let peakRss = baselineRss;
    let samples = 0;
    const sampler = setInterval(() => {
      const r = rssOf(pid);
      if (r !== null) {
        peakRss = Math.max(peakRss, r);
        samples += 1;
      }
    }, 50);
    try {
      const t0 = performance.now();
      const up = await uploadFile(stack.baseUrl, file);
      const tUp = performance.now();
      if (up.bytes !== bytes) throw new Error(`uploaded ${up.bytes} bytes, file has ${bytes}`);
      const b = await createBatch(stack.baseUrl, up.id);
      const ip = await waitStatus(stack.baseUrl, b.id, ['in_progress'], { pollMs: 10, timeoutMs: 120_000 });
      if (ip.batch.request_counts?.total !== lines)
        throw new Error(`batch total ${ip.batch.request_counts?.total}, expected ${lines}`);
      const last = rssOf(pid);
      if (last !== null) peakRss = Math.max(peakRss, last);
      let logged: Record<string, unknown> | undefined;
      for (let i = 0; i < 20 && !logged; i++) {
        logged = stack.api.jsonLines().find((l) => l.msg === 'batch validated' && l.batchId === b.id);
        if (!logged) await sleep(50); // the log line may reach us after the poll that saw in_progress
      }
      const split = {
        readMs: (logged?.readMs as number | undefined) ?? null,
        insertMs: (logged?.insertMs as number | undefined) ?? null,
      };
      return {
        lines,
        bytes,
        uploadMs: tUp - t0,
        validateMs: ip.at - tUp,
        totalMs: ip.at - t0,
        baselineRss,
        peakRss,
        growth: peakRss - baselineRss,
        samples,
        ...split,
      };
    } finally {
      clearInterval(sampler);
    }
  } catch (e) {
    console.error('--- api output ---\n' + stack.api.output().slice(-3000));
    throw e;
  } finally {
    await stack.close();
    rmSync(file, { force: true });
  }
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-ingest-'));
  let small: Run;
  let smallSameCount: Run;
  let big: Run;
  let bigRuns: Run[];
  try {
    small = await measure(dir, SMALL_LINES);
    // The other reading of "20 MB": as many lines as the big file, a tenth of the bytes each.
    smallSameCount = await measure(dir, BIG_LINES, Math.round(LINE_BYTES / 10));
    bigRuns = [];
    for (let i = 0; i < REPEAT; i++) bigRuns.push(await measure(dir, BIG_LINES));
    big = bigRuns.reduce((a, b) => (b.totalMs < a.totalMs ? b : a));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const r of [small, smallSameCount, ...bigRuns]) {
    console.log(
      `${r.lines} lines, ${(r.bytes / MB).toFixed(1)} MB: upload ${r.uploadMs.toFixed(0)} ms + validate ${r.validateMs.toFixed(0)} ms (read+check ${r.readMs} ms, insert ${r.insertMs} ms) = ${r.totalMs.toFixed(0)} ms; ` +
        `RSS ${(r.baselineRss / MB).toFixed(1)} → peak ${(r.peakRss / MB).toFixed(1)} MB (+${(r.growth / MB).toFixed(1)} MB, ${r.samples} samples)`,
    );
  }
  const worst = bigRuns.reduce((a, b) => (b.growth > a.growth ? b : a));
  const label = (r: Run) => `${(r.bytes / MB).toFixed(0)} MB / ${r.lines} lines`;
  const metrics: Metric[] = [
    {
      id: 'P6',
      metric: `upload + validation, ${label(big)}`,
      value: round(big.totalMs / 1000, 2),
      unit: 's',
      must: 5,
      target: 2.5,
      better: 'lower',
      note: `${
        bigRuns.length > 1
          ? `best of ${bigRuns.length} (others ${bigRuns
              .filter((r) => r !== big)
              .map((r) => (r.totalMs / 1000).toFixed(2))
              .join(', ')} s); `
          : ''
      }upload ${Math.round(big.uploadMs)} ms, create → in_progress ${Math.round(big.validateMs)} ms (in the API: read + check ${big.readMs} ms, SQLite insert ${big.insertMs} ms)`,
    },
    {
      id: 'P7',
      metric: `API RSS peak growth, ${label(big)}`,
      value: round(worst.growth / MB, 1),
      unit: 'MB',
      must: 150,
      target: 64,
      better: 'lower',
      note: `${bigRuns.length > 1 ? `largest of ${bigRuns.length} runs; ` : ''}baseline ${round(worst.baselineRss / MB, 1)} MB → peak ${round(worst.peakRss / MB, 1)} MB`,
    },
    {
      id: 'P7',
      metric: `API RSS peak growth, ${label(small)}`,
      value: round(small.growth / MB, 1),
      unit: 'MB',
      must: 150,
      target: 64,
      better: 'lower',
    },
    {
      id: 'P7',
      metric: `API RSS peak growth, ${label(smallSameCount)}`,
      value: round(smallSameCount.growth / MB, 1),
      unit: 'MB',
      must: 150,
      target: 64,
      better: 'lower',
    },
    {
      id: 'P7',
      metric: `growth change, ${label(small)} → ${label(big)}`,
      value: round((worst.growth - small.growth) / MB, 1),
      unit: 'MB',
      better: 'lower',
      note: `10× the bytes at the same line count (${label(smallSameCount)} → ${label(big)}): ${round((worst.growth - smallSameCount.growth) / MB, 1)} MB; what grows is per line (≤ MAX_BATCH_REQUESTS rows held until their insert), not per byte`,
    },
  ];
  printTable(`ingest${quick ? ' (quick)' : ''}`, metrics);
  writeResults('ingest', {
    quick,
    params: { lineBytes: LINE_BYTES, bigLines: BIG_LINES, smallLines: SMALL_LINES, sampleMs: 50 },
    metrics,
    details: { small, smallSameCount, big, bigRuns },
  });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
