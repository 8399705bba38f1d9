/**
 * The fault matrix (docs/reliability.md): TRIALS (default 12) batches of N (default 2,000)
 * requests on one long-lived stack (own redis-server with AOF, API process, worker process,
 * simulator engine), each hit mid-batch by one or two random faults: SIGKILL of the worker,
 * of the API, of the engine, redis-server SIGKILLed or SHUTDOWN and restarted on the same
 * port. Every trial must end with each custom_id exactly once, request_counts equal to the
 * files, a terminal state in bounded time and no more redone work than was in flight.
 * Replay a failure with FAULT_SEED=<printed seed> (trial i uses seed + i). `npm run soak`
 * runs the same trials in bulk.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CI_FAULTS, FaultStack, runTrial, type TrialResult } from '../helpers/fault.js';

const TRIALS = Number(process.env.TRIALS ?? 12);
const N = Number(process.env.N ?? 2000);
const SEED = Number(process.env.FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));

let stack: FaultStack;
let dir: string;
const results: TrialResult[] = [];

beforeAll(async () => {
  console.log(
    `fault matrix: ${TRIALS} trials of ${N} requests, FAULT_SEED=${SEED} (replay: FAULT_SEED=${SEED} npx vitest run test/e2e/fault-matrix.test.ts)`,
  );
  dir = mkdtempSync(path.join(tmpdir(), 'bw-fault-'));
  stack = await FaultStack.start({ dir, slots: 32, ttftMs: 50 });
}, 180_000);

afterAll(async () => {
  await stack?.close();
  const landed = results.flatMap((r) => r.faults.filter((f) => f.landedAt !== null).map((f) => f.kind));
  const count = (k: string) => landed.filter((x) => x === k).length;
  console.log(
    `fault matrix done: ${results.length} trials, faults landed ${landed.length} (${CI_FAULTS.map((k) => `${k} ${count(k)}`).join(', ')}), ` +
      `redone max ${Math.max(0, ...results.map((r) => r.redone))}, trial time max ${Math.max(0, ...results.map((r) => r.durationMs))} ms`,
  );
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

function explain(r: TrialResult): string {
  return `trial ${r.trial} (FAULT_SEED=${SEED}, trial seed ${r.seed}) faults ${JSON.stringify(r.faults)}:\n  ${r.problems.join('\n  ')}\n${stack.log.slice(-8).join('\n')}`;
}

describe('fault matrix: whatever dies, every request is answered exactly once', () => {
  for (let i = 0; i < TRIALS; i++) {
    it(`trial ${i}`, { timeout: 240_000 }, async () => {
      const r = await runTrial(stack, i, SEED + i, N, CI_FAULTS);
      results.push(r);
      console.log(
        `trial ${i}: ${r.status} in ${r.durationMs} ms, redone ${r.redone} (bound ${r.redoneBound}), faults ${r.faults.map((f) => `${f.kind}@${f.landedAt ?? 'skipped'}`).join(' ')}`,
      );
      expect(r.problems, explain(r)).toEqual([]);
      expect(r.status).toBe('completed');
      expect(r.outputLines + r.errorLines).toBe(N);
      expect(r.redone).toBeLessThanOrEqual(r.redoneBound);
    });
  }

  for (let i = 0; i < 2; i++) {
    it(`cancel racing faults and completion ${i}`, { timeout: 240_000 }, async () => {
      const t = TRIALS + 1 + i;
      const r = await runTrial(stack, t, SEED + t, N, CI_FAULTS, { cancel: true });
      results.push(r);
      console.log(
        `cancel trial ${i}: ${r.status} in ${r.durationMs} ms, cancelled at ${r.cancelledAt}, output ${r.outputLines}, errors ${JSON.stringify(r.errorCodes)}, faults ${r.faults.map((f) => `${f.kind}@${f.landedAt ?? 'skipped'}`).join(' ')}`,
      );
      expect(r.problems, explain(r)).toEqual([]);
      expect(['completed', 'cancelled']).toContain(r.status);
      expect(r.outputLines + r.errorLines).toBe(N);
    });
  }

  it(
    'Redis wiped mid-batch (FLUSHALL): the batch is rebuilt from SQLite and completes exactly once',
    { timeout: 240_000 },
    async () => {
      const r = await runTrial(stack, TRIALS, SEED + TRIALS, N, ['redis-flushall']);
      results.push(r);
      console.log(
        `flushall: ${r.status} in ${r.durationMs} ms, redone ${r.redone}, faults ${r.faults.map((f) => `${f.kind}@${f.landedAt ?? 'skipped'}`).join(' ')}`,
      );
      expect(r.problems, explain(r)).toEqual([]);
      expect(r.faults.some((f) => f.landedAt !== null)).toBe(true);
      expect(r.outputLines).toBe(N);
    },
  );
});
