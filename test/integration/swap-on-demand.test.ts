import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { startMain, waitUntil, type ServerProcess } from '../helpers/processes.js';

const twoModels = (simA: Record<string, unknown> = {}, simB: Record<string, unknown> = {}) => `models:
  - id: model-a
    engine: sim
    options: { max_num_seqs: 8 }
    sim: ${JSON.stringify({ output_tokens: 6, ...simA })}
  - id: model-b
    engine: sim
    options: { max_num_seqs: 8 }
    sim: ${JSON.stringify({ output_tokens: 6, ...simB })}
`;

let server: TestServer | undefined;
const procs: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill('SIGKILL')));
  await server?.close();
  server = undefined;
});

const ask = (client: OpenAI, model: string, text: string) =>
  client.chat.completions.create({ model, messages: [{ role: 'user', content: text }] });
const readyLines = (s: TestServer) => s.logs.filter((l) => l.msg === 'engine ready').map((l) => l.model);

describe('swap on demand', () => {
  it('loads a model on first request, holding the request instead of failing it', async () => {
    server = await startTestServer({ worker: true, modelsYaml: twoModels({ startup_ms: 800 }), captureLogs: true });
    const t0 = Date.now();
    const r = await ask(server.client, 'model-a', 'hello there');
    expect(r.choices[0]!.message.content).toBe('You said: hello there tok0 tok1');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    const models = await server.client.models.list();
    expect(models.data.find((m) => m.id === 'model-a')).toMatchObject({ state: 'ready' });
    expect(models.data.find((m) => m.id === 'model-b')).toMatchObject({ state: 'unloaded' });
  });

  it('answers concurrent requests for two models on one GPU with one swap, no thrash', async () => {
    server = await startTestServer({
      worker: true,
      modelsYaml: twoModels({ ttft_ms: 100 }, { ttft_ms: 100 }),
      captureLogs: true,
    });
    const jobs = [];
    for (let i = 0; i < 8; i++) {
      jobs.push(ask(server.client, 'model-a', `a ${i}`).then((r) => ['model-a', i, r] as const));
      jobs.push(ask(server.client, 'model-b', `b ${i}`).then((r) => ['model-b', i, r] as const));
    }
    const answers = await Promise.all(jobs);
    for (const [model, i, r] of answers) {
      expect(r.model).toBe(model);
      expect(r.choices[0]!.message.content).toContain(`${model.slice(-1)} ${i}`);
    }
    // One cold start and one swap: each model became ready exactly once.
    expect(readyLines(server).sort()).toEqual(['model-a', 'model-b']);
  });

  it('serves an interactive request during a running batch of another model; the batch is unaffected', async () => {
    server = await startTestServer({
      worker: true,
      env: { INTERACTIVE_POLICY: 'preempt' },
      modelsYaml: twoModels({ ttft_ms: 20, max_concurrency: 8 }),
      captureLogs: true,
    });
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-swap-'));
    const file = await server.client.files.create({
      file: createReadStream(writeJsonl(dir, 'in.jsonl', chatLines(300, 'model-a'))),
      purpose: 'batch',
    });
    const batch = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitUntil(
      async () => ((await server!.client.batches.retrieve(batch.id)).request_counts?.completed ?? 0) >= 20,
      30_000,
      'batch progress',
    );
    const r = await ask(server.client, 'model-b', 'interrupting question');
    expect(r.choices[0]!.message.content).toContain('interrupting question');
    const done = await waitForBatch(server.client, batch.id, ['completed', 'failed'], 90_000);
    expect(done.status).toBe('completed');
    const out = await readLinesOf(server.client, done.output_file_id);
    expect(out).toHaveLength(300);
    expect(new Set(out.map((l) => l.custom_id)).size).toBe(300);
    for (const l of out) expect(l.response.body.model).toBe('model-a');
    const swaps = server.logs
      .filter((l) => l.msg === 'worker switched model queue')
      .map((l) => `${String(l.from)}->${String(l.to)}`);
    expect(swaps).toEqual(['null->model-a', 'model-a->model-b', 'model-b->model-a']);
  });

  it('routes to a model served by a second worker process', async () => {
    server = await startTestServer({ worker: false, modelsYaml: twoModels() });
    const env = {
      DATA_DIR: path.join(server.dataDir, 'worker2'),
      MODELS_FILE: server.config.modelsFile,
      REDIS_URL: server.redisUrl,
      QUEUE_PREFIX: server.prefix,
      WORKER_MODELS: 'model-b',
      WORKER_ID: 'second-worker',
      // As a worker on another machine would: listen beyond loopback, advertise its address.
      ENGINE_BIND_HOST: '0.0.0.0',
      ENGINE_ADVERTISE_HOST: '127.0.0.2',
    };
    procs.push(startMain('worker', env));
    const r = await ask(server.client, 'model-b', 'routed far away');
    expect(r.choices[0]!.message.content).toContain('routed far away');
    const redis = new Redis(server.redisUrl);
    const hb = JSON.parse((await redis.get(`${server.prefix}:worker:second-worker`))!) as {
      engines: { model: string; baseUrl: string }[];
    };
    await redis.quit();
    expect(hb.engines.find((e) => e.model === 'model-b')?.baseUrl).toMatch(/^http:\/\/127\.0\.0\.2:\d+$/);
    // model-a is served by no live worker: a clear 503 once the short no-worker wait ends.
    const err = await server.client.chat.completions
      .create({ model: 'model-a', messages: [{ role: 'user', content: 'x' }] }, { timeout: 30_000 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((err as InstanceType<typeof OpenAI.APIError>).message).toMatch(/No worker serves model model-a/);
  }, 60_000);

  it('restarts an engine that crashes during a request; the request is retried on the new engine', async () => {
    server = await startTestServer({ worker: true, modelsYaml: twoModels({ crash_after: 2 }), captureLogs: true });
    await ask(server.client, 'model-a', 'one');
    await ask(server.client, 'model-a', 'two');
    // The engine exits when the third request arrives, without answering it: the API holds the
    // request, the worker restarts the engine, and the request is retried once on the new one.
    const third = await ask(server.client, 'model-a', 'three');
    expect(third.choices[0]!.message.content).toContain('three');
    const fourth = await ask(server.client, 'model-a', 'four');
    expect(fourth.choices[0]!.message.content).toContain('four');
    expect(server.logs.some((l) => l.msg === 'engine exited unexpectedly' && l.model === 'model-a')).toBe(true);
    expect(readyLines(server).filter((m) => m === 'model-a').length).toBeGreaterThanOrEqual(2);
  });
});
