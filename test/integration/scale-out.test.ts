/**
 * Scale out: several worker processes (one simulator engine each) pulling one model's chunks
 * from one Redis. A batch spreads over all of them, a worker that joins mid-batch starts taking
 * chunks, and one that leaves on SIGTERM hands its chunks back. No timing assertions: shares of
 * the work, exactly-once results, and log lines.
 */
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { startMain, waitUntil, type ServerProcess } from '../helpers/processes.js';
import { chunkPlan, chunkQueueName, keys, type WorkerHeartbeat } from '../../src/queue/jobs.js';

const SLOTS = 8;
const modelsYaml = (ttftMs: number) =>
  `models:\n  - id: ${SIM_MODEL}\n    engine: sim\n    startup_timeout_s: 60\n    options:\n      max_num_seqs: ${SLOTS}\n    sim: ${JSON.stringify({ output_tokens: 4, ttft_ms: ttftMs, max_concurrency: SLOTS })}\n`;

let server: TestServer | undefined;
let redis: Redis | undefined;
const workers: ServerProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.kill('SIGKILL')));
  redis?.disconnect();
  redis = undefined;
  await server?.close();
  server = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'bw-scale-'));
  dirs.push(d);
  return d;
};

async function start(ttftMs: number) {
  const s = await startTestServer({ modelsYaml: modelsYaml(ttftMs) });
  server = s;
  redis = new Redis(s.redisUrl, { maxRetriesPerRequest: 3 });
  return s;
}

/** A worker as its own process (its own engine), as on another machine. */
function startWorkerProc(s: TestServer, id: string, env: Record<string, string> = {}): ServerProcess {
  const w = startMain('worker', {
    REDIS_URL: s.redisUrl,
    QUEUE_PREFIX: s.prefix,
    MODELS_FILE: s.config.modelsFile,
    DATA_DIR: tmp(),
    WORKER_ID: id,
    LOG_LEVEL: 'info',
    JOB_LOCK_MS: '5000',
    JOB_STALLED_INTERVAL_MS: '1000',
    ...env,
  });
  workers.push(w);
  return w;
}

async function heartbeats(s: TestServer): Promise<WorkerHeartbeat[]> {
  const k = await redis!.keys(keys(s.prefix).workersPattern);
  const vals = k.length ? await redis!.mget(...k) : [];
  return vals.filter((v): v is string => !!v).map((v) => JSON.parse(v) as WorkerHeartbeat);
}

/** Requests each worker's engine has served, from the simulator's /sim/stats. */
async function servedBy(s: TestServer): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const hb of await heartbeats(s)) {
    const e = hb.engines.find((x) => x.model === SIM_MODEL && x.state === 'ready' && x.baseUrl);
    if (!e) continue;
    const stats = (await (await fetch(`${e.baseUrl}/sim/stats`)).json()) as { served: number };
    out.set(hb.workerId, stats.served);
  }
  return out;
}

async function waitEngines(s: TestServer, ids: string[]) {
  await waitUntil(
    async () => {
      const served = await servedBy(s);
      return ids.every((id) => served.has(id));
    },
    90_000,
    `engines of ${ids.join(', ')} ready`,
  );
}

async function submit(s: TestServer, n: number) {
  const file = await s.client.files.create({
    file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(n, SIM_MODEL))),
    purpose: 'batch',
  });
  return s.client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
}

async function expectExactlyOnce(s: TestServer, id: string, n: number) {
  const done = await waitForBatch(s.client, id, ['completed', 'failed', 'cancelled', 'expired'], 180_000);
  expect(done.status).toBe('completed');
  expect(done.request_counts).toEqual({ total: n, completed: n, failed: 0 });
  const out = await readLinesOf(s.client, done.output_file_id);
  const ids = out.map((l) => l.custom_id as string);
  expect(ids.length).toBe(n);
  expect(new Set(ids).size).toBe(n);
  expect(new Set(ids)).toEqual(new Set(Array.from({ length: n }, (_, i) => `req-${i}`)));
  return done;
}

const progress = async (s: TestServer, id: string) => {
  const b = await s.client.batches.retrieve(id);
  return (b.request_counts?.completed ?? 0) + (b.request_counts?.failed ?? 0);
};

describe('scale out: many workers, one Redis', () => {
  it('keeps a chunk plan per live worker of the model (dispatch sized from heartbeats)', async () => {
    const s = await start(0);
    // Three workers' heartbeats, but no worker consumes: the queue shows what the dispatcher keeps.
    for (const id of ['hb-1', 'hb-2', 'hb-3']) {
      const hb: WorkerHeartbeat = {
        workerId: id,
        models: [SIM_MODEL],
        activeModel: SIM_MODEL,
        engines: [],
        at: Date.now(),
      };
      await redis!.set(keys(s.prefix).worker(id), JSON.stringify(hb), 'PX', 60_000);
    }
    const b = await submit(s, 2000);
    const queue = `${s.prefix}:${chunkQueueName(SIM_MODEL)}:wait`;
    const expected = chunkPlan(SLOTS, s.config.env.BATCH_CHUNK_SIZE, 3).queued;
    await waitUntil(async () => (await redis!.llen(queue)) >= expected, 30_000, `${expected} chunks queued`);
    // The plan for one worker is smaller: sized for one, workers 2 and 3 would find Redis empty.
    expect(expected).toBeGreaterThan(chunkPlan(SLOTS, s.config.env.BATCH_CHUNK_SIZE, 1).queued * 2);
    // It stays there (no over-dispatch) while nobody runs them.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await redis!.llen(queue)).toBe(expected);
    await s.client.batches.cancel(b.id);
  });

  it('spreads a batch over three worker processes, every custom_id exactly once', async () => {
    const s = await start(20);
    const ids = ['node-a', 'node-b', 'node-c'];
    for (const id of ids) startWorkerProc(s, id);
    await waitUntil(async () => (await heartbeats(s)).length === 3, 90_000, 'three heartbeats');
    const n = 3000;
    const b = await submit(s, n);
    await expectExactlyOnce(s, b.id, n);
    const served = await servedBy(s);
    expect([...served.keys()].sort()).toEqual(ids);
    const total = [...served.values()].reduce((a, x) => a + x, 0);
    expect(total).toBeGreaterThanOrEqual(n);
    for (const [id, count] of served)
      expect(count / n, `share of ${id}: ${count} of ${n}`).toBeGreaterThanOrEqual(0.15);
  }, 240_000);

  it('a worker that joins mid-batch starts taking chunks', async () => {
    // Slow engines (8 slots, 150 ms a request: ~50 req/s, ~45 s for the batch on one worker),
    // so the batch is still running when the late process is up, even on a busy machine.
    const s = await start(150);
    startWorkerProc(s, 'first');
    await waitUntil(async () => (await heartbeats(s)).length === 1, 90_000, 'first heartbeat');
    const n = 2400;
    const b = await submit(s, n);
    await waitUntil(async () => (await progress(s, b.id)) >= 150, 120_000, 'progress on the first worker');
    startWorkerProc(s, 'late');
    await waitEngines(s, ['late']);
    expect(await progress(s, b.id), 'the batch ended before the late worker was up').toBeLessThan(n * 0.8);
    const done = await expectExactlyOnce(s, b.id, n);
    expect(done.status).toBe('completed');
    const served = await servedBy(s);
    expect(served.get('late') ?? 0, `late worker served ${served.get('late')}`).toBeGreaterThanOrEqual(0.1 * n);
    expect(served.get('first') ?? 0).toBeGreaterThanOrEqual(150);
  }, 240_000);

  it('a worker that leaves on SIGTERM hands its chunks back to the others', async () => {
    // A lock that outlives the test: a chunk left locked by the leaving worker would never
    // come back in time, so completing proves the hand-back (not lock expiry) returned it.
    const s = await start(50);
    const env = { JOB_LOCK_MS: '600000', SHUTDOWN_TIMEOUT_MS: '60000' };
    const leaving = startWorkerProc(s, 'leaving', env);
    const staying = startWorkerProc(s, 'staying', env);
    await waitUntil(async () => (await heartbeats(s)).length === 2, 90_000, 'two heartbeats');
    const n = 2400;
    const b = await submit(s, n);
    await waitEngines(s, ['leaving', 'staying']);
    await waitUntil(
      async () => ((await servedBy(s)).get('leaving') ?? 0) >= 100,
      120_000,
      'the leaving worker running chunks',
    );
    const exit = await leaving.kill('SIGTERM');
    expect(exit.code).toBe(0);
    expect(await progress(s, b.id)).toBeLessThan(n);
    expect(leaving.output()).toMatch(/chunk handed back/);
    expect(leaving.output()).not.toMatch(/chunk job failed/);
    await expectExactlyOnce(s, b.id, n);
    // Its heartbeat is gone at once (not after expiry), so dispatch stops sizing for it.
    expect((await heartbeats(s)).map((h) => h.workerId)).toEqual(['staying']);
    expect(staying.output()).not.toMatch(/chunk job failed/);
  }, 240_000);
});
