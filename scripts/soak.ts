/**
 * `npm run soak`: the fault matrix of test/e2e/fault-matrix.test.ts with many more trials.
 * TRIALS (default 200), N (requests per batch, default 2000), FAULT_SEED (default: random,
 * printed), FAULTS (comma list, default every kind incl. redis-flushall), SLOTS, TTFT_MS,
 * CANCEL_EVERY (every n-th trial also cancels its batch mid-way; default 5, 0 = never).
 * Writes bench/results/soak-<time>.json and prints one line per trial; exit 1 if any trial
 * broke an invariant.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FaultStack, runTrial, type FaultKind, type TrialResult } from '../test/helpers/fault.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TRIALS = Number(process.env.TRIALS ?? 200);
const N = Number(process.env.N ?? 2000);
const SEED = Number(process.env.FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SLOTS = Number(process.env.SLOTS ?? 32);
const TTFT_MS = Number(process.env.TTFT_MS ?? 60);
/** Every CANCEL_EVERY-th trial also cancels its batch at a random point (0: never). */
const CANCEL_EVERY = Number(process.env.CANCEL_EVERY ?? 5);
const ALL: FaultKind[] = ['worker-kill', 'api-kill', 'engine-kill', 'redis-kill', 'redis-shutdown', 'redis-flushall'];
const KINDS = (process.env.FAULTS ? process.env.FAULTS.split(',').map((s) => s.trim()) : ALL) as FaultKind[];
for (const k of KINDS) if (!ALL.includes(k)) throw new Error(`unknown fault kind ${k} (known: ${ALL.join(', ')})`);

const dir = mkdtempSync(path.join(tmpdir(), 'bw-soak-'));
console.log(`soak: ${TRIALS} trials of ${N} requests, FAULT_SEED=${SEED}, faults ${KINDS.join(',')}, dir ${dir}`);
const t0 = Date.now();
const stack = await FaultStack.start({ dir, slots: SLOTS, ttftMs: TTFT_MS });
const results: TrialResult[] = [];
let stopping = false;
process.on('SIGINT', () => (stopping = true));
try {
  for (let i = 0; i < TRIALS && !stopping; i++) {
    const r = await runTrial(stack, i, SEED + i, N, KINDS, {
      cancel: CANCEL_EVERY > 0 && i % CANCEL_EVERY === CANCEL_EVERY - 1,
    });
    results.push(r);
    const faults = r.faults.map((f) => `${f.kind}@${f.landedAt ?? 'skip'}`).join(' ');
    console.log(
      `trial ${i} seed ${r.seed} ${r.status} ${(r.durationMs / 1000).toFixed(1)} s (recovery ${r.recoveryMs === null ? '-' : (r.recoveryMs / 1000).toFixed(1) + ' s'}) redone ${r.redone}/${r.redoneBound} [${faults}]${r.cancelledAt !== null ? ` cancel@${r.cancelledAt}` : ''}${r.problems.length ? ' PROBLEMS: ' + r.problems.join('; ') : ''}`,
    );
    if (r.problems.length || process.env.VERBOSE)
      console.log(
        stack.log
          .filter((l) => l.includes(`trial ${i} `) || l.includes('inject'))
          .slice(-6)
          .join('\n'),
      );
  }
} finally {
  await stack.close();
}

const byKind: Record<string, { landed: number; trials: number; redone: number[] }> = {};
for (const r of results) {
  for (const f of r.faults) {
    const k = (byKind[f.kind] ??= { landed: 0, trials: 0, redone: [] });
    if (f.landedAt !== null) k.landed += 1;
  }
  // Redone work attributed to a trial's fault kinds only when the trial had one landed fault.
  const landed = r.faults.filter((f) => f.landedAt !== null);
  if (landed.length === 1) {
    const k = byKind[landed[0]!.kind]!;
    k.trials += 1;
    k.redone.push(r.redone);
  }
}
const durations = results.map((r) => r.durationMs).sort((a, b) => a - b);
const summary = {
  kind: 'fault-soak',
  startedAt: new Date(t0).toISOString(),
  wallS: Math.round((Date.now() - t0) / 1000),
  seed: SEED,
  trials: results.length,
  requestsPerBatch: N,
  slots: SLOTS,
  ttftMs: TTFT_MS,
  faults: KINDS,
  failedTrials: results
    .filter((r) => r.problems.length > 0)
    .map((r) => ({ trial: r.trial, seed: r.seed, faults: r.faults, problems: r.problems })),
  faultsLanded: results.reduce((s, r) => s + r.faults.filter((f) => f.landedAt !== null).length, 0),
  durationMs: { min: durations[0], median: durations[Math.floor(durations.length / 2)], max: durations.at(-1) },
  redone: {
    total: results.reduce((s, r) => s + r.redone, 0),
    max: Math.max(0, ...results.map((r) => r.redone)),
    maxRatioToBound: Math.max(
      0,
      ...results
        .filter((r) => Number.isFinite(r.redoneBound) && r.redoneBound > 0)
        .map((r) => r.redone / r.redoneBound),
    ),
  },
  singleFaultRedone: Object.fromEntries(
    Object.entries(byKind).map(([k, v]) => [
      k,
      {
        landed: v.landed,
        singleFaultTrials: v.trials,
        max: Math.max(0, ...v.redone),
        mean: v.redone.length ? Math.round((v.redone.reduce((a, b) => a + b, 0) / v.redone.length) * 10) / 10 : 0,
      },
    ]),
  ),
  errorLines: results.reduce((s, r) => s + r.errorLines, 0),
  results,
};
const outDir = path.join(ROOT, 'bench/results');
mkdirSync(outDir, { recursive: true });
const file = path.join(outDir, `soak-${new Date(t0).toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
console.log(
  `\n${results.length} trials, ${summary.failedTrials.length} with problems, ${summary.faultsLanded} faults landed, redone max ${summary.redone.max}; wrote ${path.relative(ROOT, file)}`,
);
rmSync(dir, { recursive: true, force: true });
process.exit(summary.failedTrials.length > 0 ? 1 : 0);
