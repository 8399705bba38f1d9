/**
 * `npm run bench:proxy`: what the inference proxy adds on top of the engine (issue
 * "Performance", P1-P4).
 *
 * Starts a private Redis, the API (`src/main.ts serve`) and two workers (`src/main.ts worker`)
 * as child processes, one serving a zero-latency simulator model and one a paced one (for the
 * chunk-timing check). After a warm-up it reads the engines' own URLs from the workers'
 * heartbeats in Redis and sends the same requests to the engine directly and through the API,
 * in interleaved rounds (direct, proxied, proxied, direct, ...); each figure is the median over
 * rounds of (proxied - direct).
 *
 *   P1  sequential non-streaming /v1/chat/completions, added latency p50
 *   P2  same, p99
 *   P3  streaming: added time to the first body byte (SSE data), p50; and chunks are passed on
 *       as they arrive (paced engine: inter-chunk gaps through the proxy match the direct ones)
 *   P4  throughput through the proxy with 64 requests in flight
 *
 * Flags: --quick (tiny run, for CI), --json <path> (default bench/results/proxy-<stamp>.json),
 * --log-level <level> (the API's LOG_LEVEL, default info as users run it), --cpu-prof <dir>
 * (profile the API process), --strict (exit 1 when a Must is missed), --keep (keep logs).
 * Run it under `flock /tmp/bench.lock` on a shared machine.
 */
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { closedLoop, timedPost, type LoadResult, type Timed } from './lib/http.js';
import { defaultResultsPath, describeMachine, machineInfo, parseFlags, printTable, writeJson } from './lib/report.js';
import { cpuTimeMs, startStack, withMachineLoad, type Stack } from './lib/stack.js';
import { median, round, roundSummary, summarize, type Summary } from './lib/stats.js';

const USAGE =
  'usage: bench/proxy.ts [--quick] [--json <path>] [--log-level <level>] [--cpu-prof <dir>] [--strict] [--keep]';
let flags: Record<string, string | boolean>;
try {
  flags = parseFlags(process.argv.slice(2), {
    valued: ['json', 'log-level', 'cpu-prof'],
    boolean: ['quick', 'strict', 'keep', 'help'],
  });
} catch (e) {
  console.error(`${(e as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}
const quick = flags.quick === true;

const FAST = 'bench-sim';
const PACED = 'bench-sim-paced';
const PACED_TPS = quick ? 100 : 50;
const PACED_TOKENS = 16; // = max_tokens of the requests

/** Sizes of a run. */
const plan = quick
  ? {
      warmup: 200,
      rounds: 2,
      perRound: 100,
      streamRounds: 2,
      streamPerRound: 50,
      pacedRounds: 1,
      pacedPerRound: 1,
      loadRounds: 1,
      loadMs: 1000,
      concurrency: 64,
    }
  : {
      warmup: 3000,
      rounds: 20,
      perRound: 250,
      streamRounds: 20,
      streamPerRound: 100,
      pacedRounds: 3,
      pacedPerRound: 2,
      loadRounds: 5,
      loadMs: 2500,
      concurrency: 64,
    };

const chatBody = (stream: boolean, model = FAST) =>
  Buffer.from(
    JSON.stringify({
      model,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello there, how are you today?' },
      ],
      max_tokens: 16,
      ...(stream ? { stream: true } : {}),
    }),
  );
const BODY = chatBody(false);
const STREAM_BODY = chatBody(true);
const PACED_BODY = chatBody(true, PACED);
const CHAT = '/v1/chat/completions';
const OVERHEAD_HEADER = 'x-batchwright-overhead-ms';

type Side = 'direct' | 'proxied';
/** Round r runs the two sides in this order: ABBA, so that a drift in time hits both alike. */
const orderOf = (r: number): Side[] => (r % 2 === 0 ? ['direct', 'proxied'] : ['proxied', 'direct']);

function check(r: Timed, what: string): Timed {
  if (r.status !== 200)
    throw new Error(`${what}: HTTP ${r.status}${r.body ? `: ${r.body.toString().slice(0, 300)}` : ''}`);
  return r;
}

async function sequential(
  pool: Pool,
  body: Buffer,
  n: number,
  what: string,
  onEach?: (r: Timed) => void,
): Promise<Timed[]> {
  const out = new Array<Timed>(n);
  for (let i = 0; i < n; i++) {
    const r = check(await timedPost(pool, CHAT, body), what);
    out[i] = r;
    onEach?.(r);
  }
  return out;
}

const headerInto = (into: number[]) => (t: Timed) => {
  const h = t.headers[OVERHEAD_HEADER];
  if (typeof h === 'string') into.push(Number(h));
};

interface PairRound {
  direct: Summary;
  proxied: Summary;
}

/** Per-round summaries of each side, and the medians over rounds of their p50/p99 and of the differences. */
function pairStats(rounds: PairRound[]) {
  const med = (f: (r: PairRound) => number) => round(median(rounds.map(f)));
  return {
    rounds: rounds.map((r) => ({ direct: roundSummary(r.direct), proxied: roundSummary(r.proxied) })),
    direct: { p50: med((r) => r.direct.p50), p99: med((r) => r.direct.p99) },
    proxied: { p50: med((r) => r.proxied.p50), p99: med((r) => r.proxied.p99) },
    added: { p50: med((r) => r.proxied.p50 - r.direct.p50), p99: med((r) => r.proxied.p99 - r.direct.p99) },
  };
}

/** Interleaved rounds of `perRound` sequential requests per side; `pick` chooses the timing measured. */
async function pairedRounds(
  sides: Record<Side, Pool>,
  body: Buffer,
  rounds: number,
  perRound: number,
  pick: (t: Timed) => number,
  headers: number[],
) {
  const out: PairRound[] = [];
  for (let r = 0; r < rounds; r++) {
    const got: Partial<Record<Side, Summary>> = {};
    for (const s of orderOf(r)) {
      const res = await sequential(
        sides[s],
        body,
        perRound,
        `${s} round ${r}`,
        s === 'proxied' ? headerInto(headers) : undefined,
      );
      got[s] = summarize(res.map(pick));
    }
    out.push({ direct: got.direct!, proxied: got.proxied! });
  }
  return pairStats(out);
}

/** P3, second half: on a paced engine, the proxied stream arrives in as many pieces, as far apart, as the direct one. */
async function pacedStreams(sides: Record<Side, Pool>) {
  const per: Record<Side, { chunks: number[]; medianGapMs: number[]; spanMs: number[]; firstMs: number[] }> = {
    direct: { chunks: [], medianGapMs: [], spanMs: [], firstMs: [] },
    proxied: { chunks: [], medianGapMs: [], spanMs: [], firstMs: [] },
  };
  for (let r = 0; r < plan.pacedRounds; r++) {
    for (const s of orderOf(r)) {
      for (let i = 0; i < plan.pacedPerRound; i++) {
        const c = check(await timedPost(sides[s], CHAT, PACED_BODY, { chunks: true }), `paced ${s}`).chunkMs!;
        const gaps = c.slice(1).map((t, k) => t - c[k]!);
        per[s].chunks.push(c.length);
        per[s].medianGapMs.push(median(gaps));
        per[s].spanMs.push(c[c.length - 1]! - c[0]!);
        per[s].firstMs.push(c[0]!);
      }
    }
  }
  const summary = (s: Side) => ({
    chunksPerStream: median(per[s].chunks),
    medianGapMs: round(median(per[s].medianGapMs)),
    firstChunkMs: round(median(per[s].firstMs)),
    spanMs: round(median(per[s].spanMs)),
  });
  const direct = summary('direct');
  const proxied = summary('proxied');
  const expectedGapMs = 1000 / PACED_TPS;
  // A buffering proxy would deliver one lump at the end: one chunk, no span.
  const progressive =
    proxied.chunksPerStream >= 0.8 * direct.chunksPerStream &&
    proxied.spanMs >= 0.8 * direct.spanMs &&
    Math.abs(proxied.medianGapMs - direct.medianGapMs) <= Math.max(2, 0.1 * expectedGapMs);
  return { tokensPerSecond: PACED_TPS, tokens: PACED_TOKENS, expectedGapMs, direct, proxied, progressive };
}

/** P4: closed-loop load with `concurrency` in flight, interleaved rounds; also the API's CPU per proxied request. */
async function throughput(sides: Record<Side, Pool>, stack: Stack) {
  const loads: Record<Side, LoadResult[]> = { direct: [], proxied: [] };
  const apiCpuUs: number[] = [];
  for (let r = 0; r < plan.loadRounds; r++) {
    for (const s of orderOf(r)) {
      const cpu0 = cpuTimeMs(stack.api.proc.pid);
      const res = await closedLoop(sides[s], {
        concurrency: plan.concurrency,
        durationMs: plan.loadMs,
        path: CHAT,
        body: BODY,
      });
      if (s === 'proxied') apiCpuUs.push(((cpuTimeMs(stack.api.proc.pid) - cpu0) * 1000) / Math.max(1, res.completed));
      if (res.errors > 0) throw new Error(`throughput ${s}: ${res.errors} errors (first: ${res.firstError})`);
      loads[s].push(res);
      await sleep(100);
    }
  }
  const summary = (s: Side) => ({
    reqPerSec: round(median(loads[s].map((x) => x.reqPerSec)), 0),
    latencyP50Ms: round(median(loads[s].map((x) => x.latencyMs.p50))),
    latencyP99Ms: round(median(loads[s].map((x) => x.latencyMs.p99))),
    rounds: loads[s].map((x) => ({
      ...x,
      reqPerSec: round(x.reqPerSec, 0),
      durationMs: round(x.durationMs, 0),
      latencyMs: roundSummary(x.latencyMs),
    })),
  });
  return {
    concurrency: plan.concurrency,
    seconds: plan.loadMs / 1000,
    direct: summary('direct'),
    proxied: summary('proxied'),
    apiCpuUsPerRequest: round(median(apiCpuUs), 1),
  };
}

function metric(value: number, must: number, target: number, unit: string, higherIsBetter = false) {
  return {
    value,
    unit,
    must,
    target,
    pass: higherIsBetter ? value >= must : value <= must,
    passTarget: higherIsBetter ? value >= target : value <= target,
  };
}

async function main(): Promise<void> {
  const started = new Date();
  const machine = machineInfo();
  const logLevel = typeof flags['log-level'] === 'string' ? flags['log-level'] : 'info';
  const jsonPath = typeof flags.json === 'string' ? flags.json : defaultResultsPath('proxy', started);
  const profDir = typeof flags['cpu-prof'] === 'string' ? path.resolve(flags['cpu-prof']) : undefined;
  console.log(`bench:proxy${quick ? ' (quick)' : ''} on ${describeMachine(machine)}; API LOG_LEVEL=${logLevel}`);

  const t0 = Date.now();
  const stack = await startStack({
    models: [
      { id: FAST, maxNumSeqs: 128, sim: { output_tokens: 16 } },
      { id: PACED, maxNumSeqs: 16, sim: { output_tokens: PACED_TOKENS, tokens_per_second: PACED_TPS } },
    ],
    workers: [[FAST], [PACED]],
    apiLogLevel: logLevel,
    apiNodeArgs: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : undefined,
    keepDir: flags.keep === true,
  });
  const pools: Pool[] = [];
  const pool = (url: string) => {
    const p = new Pool(url, { connections: plan.concurrency, keepAliveTimeout: 60_000, pipelining: 1 });
    pools.push(p);
    return p;
  };
  try {
    const proxied = pool(stack.apiUrl);
    // The first request of each model loads its engine (the API waits for a worker to start it).
    check(await timedPost(proxied, CHAT, BODY, { keepBody: true }), 'first proxied request');
    check(await timedPost(proxied, CHAT, PACED_BODY, { keepBody: true }), 'first paced request');
    const fastUrl = await stack.engineUrl(FAST);
    const pacedUrl = await stack.engineUrl(PACED);
    const sides: Record<Side, Pool> = { direct: pool(fastUrl), proxied };
    const pacedSides: Record<Side, Pool> = { direct: pool(pacedUrl), proxied };
    console.log(
      `stack up in ${Date.now() - t0} ms: API ${stack.apiUrl}, engine ${fastUrl} (paced ${pacedUrl}); logs in ${stack.dir}`,
    );

    // Same bytes both ways: a proxied answer is the engine's answer.
    const d = await timedPost(sides.direct, CHAT, BODY, { keepBody: true });
    const p = await timedPost(proxied, CHAT, BODY, { keepBody: true });
    const strip = (b: Buffer | undefined) =>
      (b ?? Buffer.alloc(0))
        .toString()
        .replace(/"id":"[^"]*"/, '')
        .replace(/"created":\d+/, '');
    if (strip(d.body) !== strip(p.body))
      throw new Error(`proxied body differs from the direct one:\n${String(d.body)}\n${String(p.body)}`);
    if (p.headers[OVERHEAD_HEADER] === undefined) console.warn(`note: the API sends no ${OVERHEAD_HEADER} header`);

    // Warm-up: JIT, connection pools, both kinds of request, some load.
    for (const s of ['direct', 'proxied'] as Side[]) {
      await sequential(sides[s], BODY, plan.warmup, `warm-up ${s}`);
      await sequential(sides[s], STREAM_BODY, Math.ceil(plan.warmup / 4), `warm-up stream ${s}`);
      await closedLoop(sides[s], {
        concurrency: plan.concurrency,
        durationMs: quick ? 200 : 1000,
        path: CHAT,
        body: BODY,
      });
    }

    // Each phase also records what else ran on the machine meanwhile (another benchmark, hypervisor steal).
    const machineLoad: Record<string, { otherCpuPct: number; stealPct: number }> = {};
    const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const { result, otherCpuPct, stealPct } = await withMachineLoad(fn);
      machineLoad[name] = { otherCpuPct: round(otherCpuPct, 1), stealPct: round(stealPct, 1) };
      return result;
    };
    const hdr: number[] = [];
    const shdr: number[] = [];
    const latency = await phase('latency', () =>
      pairedRounds(sides, BODY, plan.rounds, plan.perRound, (t) => t.totalMs, hdr),
    );
    console.log(`latency: direct p50 ${latency.direct.p50} ms, proxied p50 ${latency.proxied.p50} ms`);
    const ttfb = await phase('ttfb', () =>
      pairedRounds(sides, STREAM_BODY, plan.streamRounds, plan.streamPerRound, (t) => t.firstByteMs, shdr),
    );
    const paced = await phase('paced', () => pacedStreams(pacedSides));
    const load = await phase('throughput', () => throughput(sides, stack));

    const metrics = {
      P1: { name: 'added latency, sequential, p50', ...metric(latency.added.p50, 1, 0.5, 'ms') },
      P2: { name: 'added latency, sequential, p99', ...metric(latency.added.p99, 5, 3, 'ms') },
      P3: {
        name: 'streaming: added time to first byte, p50',
        ...metric(ttfb.added.p50, 1, 0.5, 'ms'),
        chunksProgressive: paced.progressive,
      },
      P4: {
        name: `proxy throughput, ${plan.concurrency} in flight`,
        ...metric(load.proxied.reqPerSec, 2000, 5000, 'req/s', true),
      },
    };
    metrics.P3.pass &&= paced.progressive;
    metrics.P3.passTarget &&= paced.progressive;
    const hs = summarize(hdr);
    const shs = summarize(shdr);

    const results = {
      bench: 'proxy',
      date: started.toISOString(),
      command: `node --import tsx bench/proxy.ts ${process.argv.slice(2).join(' ')}`.trim(),
      quick,
      machine: { ...machine, loadavg: os.loadavg().map((x) => round(x, 2)) },
      apiLogLevel: logLevel,
      plan,
      metrics,
      latency,
      ttfb,
      pacedStreams: paced,
      throughput: load,
      overheadHeader: { nonStreaming: roundSummary(hs), streaming: roundSummary(shs) },
      machineLoad,
      elapsedS: round((Date.now() - t0) / 1000, 1),
    };

    console.log('');
    const ok = (b: boolean) => (b ? 'pass' : 'FAIL');
    printTable(
      ['metric', 'value', 'must', 'target', 'must?', 'target?'],
      [
        [
          'P1 added latency p50 (ms)',
          metrics.P1.value,
          '<= 1',
          '<= 0.5',
          ok(metrics.P1.pass),
          ok(metrics.P1.passTarget),
        ],
        ['P2 added latency p99 (ms)', metrics.P2.value, '<= 5', '<= 3', ok(metrics.P2.pass), ok(metrics.P2.passTarget)],
        [
          `P3 added TTFB p50 (ms)${paced.progressive ? '' : ' [NOT progressive]'}`,
          metrics.P3.value,
          '<= 1',
          '<= 0.5',
          ok(metrics.P3.pass),
          ok(metrics.P3.passTarget),
        ],
        [
          `P4 proxied req/s @${plan.concurrency}`,
          metrics.P4.value,
          '>= 2000',
          '>= 5000',
          ok(metrics.P4.pass),
          ok(metrics.P4.passTarget),
        ],
      ],
    );
    console.log('');
    printTable(
      ['detail', 'direct', 'proxied'],
      [
        ['latency p50 (ms)', latency.direct.p50, latency.proxied.p50],
        ['latency p99 (ms)', latency.direct.p99, latency.proxied.p99],
        ['stream TTFB p50 (ms)', ttfb.direct.p50, ttfb.proxied.p50],
        ['stream TTFB p99 (ms)', ttfb.direct.p99, ttfb.proxied.p99],
        [
          `paced: chunks/stream (${PACED_TOKENS} tok @${PACED_TPS}/s)`,
          paced.direct.chunksPerStream,
          paced.proxied.chunksPerStream,
        ],
        ['paced: median gap (ms)', paced.direct.medianGapMs, paced.proxied.medianGapMs],
        ['paced: first->last chunk (ms)', paced.direct.spanMs, paced.proxied.spanMs],
        [`req/s @${plan.concurrency}`, load.direct.reqPerSec, load.proxied.reqPerSec],
        [`latency p50 @${plan.concurrency} (ms)`, load.direct.latencyP50Ms, load.proxied.latencyP50Ms],
      ],
    );
    console.log(
      `\n${OVERHEAD_HEADER}: non-streaming p50 ${round(hs.p50)} / p99 ${round(hs.p99)} ms, streaming p50 ${round(shs.p50)} ms; ` +
        `API CPU per proxied request under load: ${load.apiCpuUsPerRequest} us`,
    );
    const busy = Object.entries(machineLoad).map(([k, v]) => `${k} ${v.otherCpuPct}% other, ${v.stealPct}% steal`);
    console.log(`machine during the phases (share of all cores): ${busy.join('; ')}`);
    if (Object.values(machineLoad).some((v) => v.otherCpuPct > 10 || v.stealPct > 10)) {
      console.log(
        'warning: other processes or hypervisor steal took over 10% of the CPU in a phase: figures are noisier than usual',
      );
    }
    const file = writeJson(jsonPath, results);
    console.log(`results: ${file} (${results.elapsedS} s)`);
    if (flags.strict && !(metrics.P1.pass && metrics.P2.pass && metrics.P3.pass && metrics.P4.pass))
      process.exitCode = 1;
  } finally {
    await Promise.all(pools.map((p) => p.close().catch(() => undefined)));
    await stack.close();
    if (profDir) console.log(`API CPU profile in ${profDir}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
