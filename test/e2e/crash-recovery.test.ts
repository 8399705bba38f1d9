import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { freePort } from '../helpers/redis-server.js';
import { startMain, waitForOutput, waitUntil, type ServerProcess } from '../helpers/processes.js';
import { chatLines, readLinesOf, waitForBatch } from '../helpers/batch.js';

const MODEL = 'sim-model';
const N = 2000;
const procs: ServerProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill('SIGKILL')));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-e2e-'));
  dirs.push(dir);
  writeFileSync(
    path.join(dir, 'models.yaml'),
    `models:\n  - id: ${MODEL}\n    engine: sim\n    options: { max_num_seqs: 32 }\n    sim: { ttft_ms: 5, max_concurrency: 32, output_tokens: 6 }\n`,
  );
  writeFileSync(path.join(dir, 'in.jsonl'), chatLines(N, MODEL));
  return dir;
}

async function envFor(dir: string) {
  const port = await freePort();
  return {
    env: {
      PORT: String(port),
      DATA_DIR: path.join(dir, 'data'),
      MODELS_FILE: path.join(dir, 'models.yaml'),
      REDIS_URL: inject('redisUrl'),
      QUEUE_PREFIX: `e2e${randomBytes(4).toString('hex')}`,
      JOB_LOCK_MS: '3000',
      JOB_STALLED_INTERVAL_MS: '1000',
    },
    client: new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'k', maxRetries: 3 }),
  };
}

async function assertExactlyOnce(client: OpenAI, batchId: string) {
  const done = await waitForBatch(client, batchId, ['completed', 'failed', 'cancelled', 'expired'], 120_000);
  expect(done.status).toBe('completed');
  const out = await readLinesOf(client, done.output_file_id);
  const err = await readLinesOf(client, done.error_file_id);
  const ids = [...out, ...err].map((l) => l.custom_id as string);
  expect(ids).toHaveLength(N);
  expect(new Set(ids).size).toBe(N);
  expect(err).toHaveLength(0);
  expect(done.request_counts).toEqual({ total: N, completed: N, failed: 0 });
  for (const l of out) expect(l.response.body.choices[0].message.content).toContain(`number ${l.custom_id.slice(4)}`);
}

async function startBatch(client: OpenAI, dir: string) {
  const f = await client.files.create({ file: createReadStream(path.join(dir, 'in.jsonl')), purpose: 'batch' });
  return client.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
}

const progress = async (client: OpenAI, id: string) =>
  (await client.batches.retrieve(id)).request_counts?.completed ?? 0;

describe('crash recovery (separate API and worker processes)', () => {
  it('resumes after the worker is killed with SIGKILL mid-batch: every custom_id exactly once', async () => {
    const dir = setup();
    const { env, client } = await envFor(dir);
    const api = startMain('serve', env);
    procs.push(api);
    await waitForOutput(api, /api listening/);
    let worker = startMain('worker', env);
    procs.push(worker);
    const batch = await startBatch(client, dir);
    await waitUntil(async () => (await progress(client, batch.id)) >= N / 4, 60_000, 'a quarter of the batch');
    await worker.kill('SIGKILL');
    const atKill = await progress(client, batch.id);
    expect(atKill).toBeLessThan(N);
    const orphan = JSON.parse(readFileSync(path.join(env.DATA_DIR, 'logs', `${MODEL}.engine.json`), 'utf8')) as {
      enginePid: number;
    };
    worker = startMain('worker', env);
    procs.push(worker);
    await assertExactlyOnce(client, batch.id);
    // The engine the killed worker left behind is gone (the simulator follows its parent, and
    // the new worker reaps recorded engines whose owner is dead).
    expect(() => process.kill(orphan.enginePid, 0)).toThrow();
  });

  it('resumes after the API process is killed with SIGKILL mid-batch', async () => {
    const dir = setup();
    const { env, client } = await envFor(dir);
    let api = startMain('serve', env);
    procs.push(api);
    await waitForOutput(api, /api listening/);
    const worker = startMain('worker', env);
    procs.push(worker);
    const batch = await startBatch(client, dir);
    await waitUntil(async () => (await progress(client, batch.id)) >= N / 4, 60_000, 'a quarter of the batch');
    await api.kill('SIGKILL');
    // The worker keeps publishing results into Redis while the API is down.
    await new Promise((r) => setTimeout(r, 500));
    api = startMain('serve', env);
    procs.push(api);
    await waitForOutput(api, /api listening/);
    await assertExactlyOnce(client, batch.id);
  });

  it('shuts down cleanly on SIGTERM (exit 0) and a restart finishes the batch', async () => {
    const dir = setup();
    const { env, client } = await envFor(dir);
    let all = startMain('all', env);
    procs.push(all);
    await waitForOutput(all, /api listening/);
    const batch = await startBatch(client, dir);
    await waitUntil(async () => (await progress(client, batch.id)) >= 100, 60_000, 'progress');
    const exit = await all.kill('SIGTERM');
    expect(exit.code).toBe(0);
    expect(all.output()).toMatch(/"msg":"stopped"/);
    all = startMain('all', env);
    procs.push(all);
    await waitForOutput(all, /api listening/);
    await assertExactlyOnce(client, batch.id);
  });
});
