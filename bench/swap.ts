/**
 * Model swaps on one worker, against two simulator models that take `--startup-ms` to load.
 *
 *   P11 interleaved batches of two models (A, B, A, B submitted together): engine starts
 *       (cold start included) vs the number of model groups (2)
 *   P8  swap overhead beyond the engine's own start-to-ready time. Interactive requests
 *       alternate between the models, so each one needs a swap. For each:
 *         client overhead = request latency (sent → answer) − the engine's own ready time
 *         manager overhead = the ModelManager's 'engine swap' ms − the engine's own ready time
 *       The engine's own ready time is the simulator's: readyAtMs in /sim/stats, the same
 *       number as its {"event":"ready","ms":…} line (ms since its process started, so the
 *       Node start-up of the simulator counts as the engine's, as a vLLM load would).
 *
 * Usage: node --import tsx bench/swap.ts [--quick] [--swaps 12] [--startup-ms 300] [--batch-n 300] [--only p8|p11]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeChatBatch } from './lib-batch/gen.js';
import {
  flag,
  numOption,
  option,
  percentile,
  printTable,
  round,
  writeResults,
  type Metric,
} from './lib-batch/report.js';
import { createBatch, simStats, startStack, uploadFile, waitStatus, type Stack } from './lib-batch/stack.js';

const quick = flag('quick');
const only = option('only');
const SWAPS = numOption('swaps', quick ? 3 : 12);
const STARTUP_MS = numOption('startup-ms', 300);
const BATCH_N = numOption('batch-n', quick ? 60 : 300);
const A = 'bench-swap-a';
const B = 'bench-swap-b';

interface SwapLog {
  time: number;
  from: string | null;
  to: string;
  reason: string;
  ms: number;
  readyMs: number | null;
}

function swapEvents(stack: Stack): SwapLog[] {
  return (stack.worker?.jsonLines() ?? [])
    .filter((l) => l.msg === 'engine swap')
    .map((l) => ({
      time: l.time as number,
      from: (l.from as string | null) ?? null,
      to: l.to as string,
      reason: l.reason as string,
      ms: l.ms as number,
      readyMs: (l.readyMs as number | null) ?? null,
    }));
}

async function p11(stack: Stack, dir: string) {
  const order = [A, B, A, B];
  const files = [];
  for (const [i, model] of order.entries()) {
    const f = path.join(dir, `p11-${i}.jsonl`);
    writeChatBatch(f, BATCH_N, model, 0, `b${i}`);
    files.push(await uploadFile(stack.baseUrl, f));
  }
  const before = swapEvents(stack).length;
  const t0 = performance.now();
  const batches = [];
  for (const f of files) batches.push(await createBatch(stack.baseUrl, f.id));
  for (const b of batches) {
    const done = await waitStatus(stack.baseUrl, b.id, ['completed'], { pollMs: 50, timeoutMs: 300_000 });
    if (done.batch.request_counts?.completed !== BATCH_N)
      throw new Error(`P11 batch ${b.id}: ${JSON.stringify(done.batch)}`);
  }
  const totalMs = performance.now() - t0;
  await sleep(200);
  const swaps = swapEvents(stack).slice(before);
  const groups = new Set(order).size;
  console.log(
    `P11: batches ${order.join(', ')} (${BATCH_N} requests each) done in ${(totalMs / 1000).toFixed(2)} s; engine starts: ${swaps.map((s) => `${s.from ?? '-'}→${s.to} (${s.reason})`).join(', ')}`,
  );
  const metric: Metric = {
    id: 'P11',
    metric: `engine starts, batches ${order.map((m) => (m === A ? 'A' : 'B')).join(',')} together`,
    value: swaps.length,
    unit: '',
    must: groups,
    target: groups,
    better: 'equal',
    note: `${groups} model groups; starts: ${swaps.map((s) => `${s.from === A ? 'A' : s.from === B ? 'B' : '-'}→${s.to === A ? 'A' : 'B'}`).join(', ')}; all ${order.length} batches completed in ${(totalMs / 1000).toFixed(1)} s`,
  };
  return { metric, details: { order, batchN: BATCH_N, totalMs, swaps } };
}

async function p8(stack: Stack) {
  const rows: {
    to: string;
    latencyMs: number;
    simReadyMs: number;
    swapMs: number | null;
    managerReadyMs: number | null;
    clientOverheadMs: number;
    managerOverheadMs: number | null;
  }[] = [];
  // Whatever is loaded now, start from B loaded so the first measured request (A) swaps.
  await stack.client.chat.completions.create({
    model: B,
    messages: [{ role: 'user', content: 'warm' }],
    max_tokens: 4,
  });
  for (let i = 0; i < SWAPS; i++) {
    const model = i % 2 === 0 ? A : B;
    const before = swapEvents(stack).length;
    await sleep(300); // the previous engine is idle, as between real requests
    const t0 = performance.now();
    const wall0 = Date.now();
    const r = await stack.client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: `swap ${i}` }],
      max_tokens: 4,
    });
    if (process.env.BENCH_TRACE) {
      for (const l of [...stack.worker!.jsonLines(), ...stack.api.jsonLines()]
        .filter((l) => (l.time as number) >= wall0)
        .sort((a, b) => (a.time as number) - (b.time as number))) {
        // The fields of the API's and worker's swap log lines (pino JSON).
        const { msg, model, to, pauseMs } = l as { msg?: string; model?: string; to?: string; pauseMs?: number };
        console.log(`  +${(l.time as number) - wall0} ${String(msg)} ${model ?? to ?? ''} ${pauseMs ?? ''}`);
      }
    }
    const latencyMs = performance.now() - t0;
    if (!r.choices[0]?.message.content) throw new Error('empty answer');
    const url = await stack.engineUrl(model);
    if (!url) throw new Error(`no engine advertised for ${model} after its answer`);
    const st = await simStats(url);
    let ev: SwapLog | undefined;
    for (let k = 0; k < 40 && !ev; k++) {
      ev = swapEvents(stack)
        .slice(before)
        .find((s) => s.to === model);
      if (!ev) await sleep(25);
    }
    const simReadyMs = st.readyAtMs ?? NaN;
    rows.push({
      to: model,
      latencyMs,
      simReadyMs,
      swapMs: ev?.ms ?? null,
      managerReadyMs: ev?.readyMs ?? null,
      clientOverheadMs: latencyMs - simReadyMs,
      managerOverheadMs: ev ? ev.ms - simReadyMs : null,
    });
    const last = rows[rows.length - 1]!;
    console.log(
      `swap ${i + 1}/${SWAPS} →${model === A ? 'A' : 'B'}: client ${latencyMs.toFixed(0)} ms, swap event ${ev?.ms ?? '?'} ms, engine's own ready ${simReadyMs} ms ` +
        `(spawn→health ${ev?.readyMs ?? '?'} ms) → overhead client ${last.clientOverheadMs.toFixed(0)} ms, manager ${last.managerOverheadMs?.toFixed(0) ?? '?'} ms`,
    );
  }
  const client = rows.map((r) => r.clientOverheadMs);
  const manager = rows.map((r) => r.managerOverheadMs).filter((x): x is number => x !== null);
  const metrics: Metric[] = [
    {
      id: 'P8',
      metric: `swap overhead p95, client-seen (${rows.length} swaps)`,
      value: round(percentile(client, 95), 0),
      unit: 'ms',
      must: 1000,
      better: 'lower',
      note: `request latency − sim readyAtMs; startup_ms ${STARTUP_MS}`,
    },
    {
      id: 'P8',
      metric: 'swap overhead p50, client-seen',
      value: round(percentile(client, 50), 0),
      unit: 'ms',
      target: 250,
      better: 'lower',
    },
    {
      id: 'P8',
      metric: 'swap overhead p95, swap event',
      value: round(percentile(manager, 95), 0),
      unit: 'ms',
      must: 1000,
      better: 'lower',
      note: "ModelManager 'engine swap' ms − sim readyAtMs",
    },
    {
      id: 'P8',
      metric: 'swap overhead p50, swap event',
      value: round(percentile(manager, 50), 0),
      unit: 'ms',
      target: 250,
      better: 'lower',
    },
  ];
  return { metrics, details: { startupMs: STARTUP_MS, rows } };
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-swap-'));
  const stack = await startStack({
    models: [
      { id: A, slots: 8, startupMs: STARTUP_MS, ttftMs: 2 },
      { id: B, slots: 8, startupMs: STARTUP_MS, ttftMs: 2 },
    ],
    workerLogLevel: 'info', // the ModelManager's 'engine swap' lines are info
  });
  const metrics: Metric[] = [];
  const details: Record<string, unknown> = {};
  try {
    if (only !== 'p8') {
      const r11 = await p11(stack, dir);
      metrics.push(r11.metric);
      details.p11 = r11.details;
    }
    if (only !== 'p11') {
      const r8 = await p8(stack);
      metrics.push(...r8.metrics);
      details.p8 = r8.details;
    }
  } catch (e) {
    console.error('--- api output ---\n' + stack.api.output().slice(-3000));
    console.error('--- worker output ---\n' + (stack.worker?.output().slice(-5000) ?? ''));
    throw e;
  } finally {
    await stack.close();
    rmSync(dir, { recursive: true, force: true });
  }
  printTable(`swaps${quick ? ' (quick)' : ''}`, metrics);
  writeResults('swap', { quick, params: { swaps: SWAPS, startupMs: STARTUP_MS, batchN: BATCH_N }, metrics, details });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
