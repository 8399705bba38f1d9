import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultModelsYaml, startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { parseProm, pick, sum, type Sample } from '../helpers/ops.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-in-'));

async function scrape(s: TestServer): Promise<Sample[]> {
  const res = await fetch(`${s.baseUrl}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseProm(await res.text());
}
const getJson = async (s: TestServer, p: string) => {
  const res = await fetch(`${s.baseUrl}${p}`);
  return { status: res.status, body: await res.json() };
};

describe('GET /metrics', () => {
  it('follows a real batch through a real worker: batches by status, requests, tokens, engine state, swaps, HTTP routes', async () => {
    // 200 requests at 20 tokens/s × 8 tokens, 16 at a time: a few seconds of in_progress to observe.
    server = await startTestServer({
      modelsYaml: defaultModelsYaml({ tokens_per_second: 20, error_rate: 0.05 }),
      env: { REQUEST_MAX_ATTEMPTS: '1' },
    });
    const before = await scrape(server);
    expect(pick(before, 'batchwright_batches', { status: 'completed' })[0]?.value).toBe(0);
    expect(sum(pick(before, 'batchwright_tokens_output_total'))).toBe(0);
    expect(pick(before, 'batchwright_engine_state')).toEqual([]);
    await server.startWorker();

    const { client } = server;
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(200, SIM_MODEL))),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { run: 'metrics' },
    });

    // While it runs: in_progress 1, requests queued or in flight for the model, the engine ready.
    let during: Sample[];
    const deadline = Date.now() + 60_000;
    for (;;) {
      during = await scrape(server);
      const open =
        sum(pick(during, 'batchwright_requests_queued', { model: SIM_MODEL, kind: 'batch' })) +
        sum(pick(during, 'batchwright_requests_in_flight', { model: SIM_MODEL, kind: 'batch' }));
      if (
        pick(during, 'batchwright_batches', { status: 'in_progress' })[0]?.value === 1 &&
        open > 0 &&
        pick(during, 'batchwright_engine_state', { model: SIM_MODEL, state: 'ready' })[0]?.value === 1
      )
        break;
      if (Date.now() > deadline) throw new Error('never saw the batch in progress with the engine ready');
      await sleep(100);
    }
    // The operator view of the same batch, mid-run.
    let view: any;
    for (;;) {
      view = (await getJson(server, `/ops/batches/${b.id}`)).body;
      if (view.throughput_rps > 0 || view.status !== 'in_progress') break;
      if (Date.now() > deadline) throw new Error('throughput never went above 0');
      await sleep(200);
    }
    if (view.status === 'in_progress') {
      expect(view.progress).toBeGreaterThan(0);
      expect(view.progress).toBeLessThan(1);
      expect(view.eta_s === null || view.eta_s >= 0).toBe(true);
      expect(view.waiting_reason).toBeNull();
    }
    expect(view).toMatchObject({
      id: b.id,
      model: SIM_MODEL,
      endpoint: '/v1/chat/completions',
      metadata: { run: 'metrics' },
      request_counts: { total: 200 },
    });

    const done = await waitForBatch(client, b.id, ['completed'], 120_000);
    const after = await scrape(server);
    expect(pick(after, 'batchwright_batches', { status: 'completed' })[0]?.value).toBe(1);
    expect(pick(after, 'batchwright_batches', { status: 'in_progress' })[0]?.value).toBe(0);
    expect(pick(after, 'batchwright_tokens_output_total', { model: SIM_MODEL })[0]?.value).toBe(
      done.usage!.output_tokens,
    );
    expect(done.usage!.output_tokens).toBe(8 * done.request_counts!.completed);
    expect(pick(after, 'batchwright_tokens_input_total', { model: SIM_MODEL })[0]?.value).toBe(
      done.usage!.input_tokens,
    );
    expect(pick(after, 'batchwright_batch_requests_total', { model: SIM_MODEL, outcome: 'completed' })[0]?.value).toBe(
      done.request_counts!.completed,
    );
    expect(pick(after, 'batchwright_batch_requests_total', { model: SIM_MODEL, outcome: 'failed' })[0]?.value).toBe(
      done.request_counts!.failed,
    );
    expect(
      sum(pick(after, 'batchwright_requests_queued', { kind: 'batch' })) +
        sum(pick(after, 'batchwright_requests_in_flight', { kind: 'batch' })),
    ).toBe(0);
    // The worker's cold start, from the swaps stream.
    expect(sum(pick(after, 'batchwright_engine_swaps_total', { reason: 'cold-start' }))).toBeGreaterThanOrEqual(1);
    expect(sum(pick(after, 'batchwright_engine_swap_duration_seconds_count'))).toBeGreaterThanOrEqual(1);
    expect(pick(after, 'batchwright_worker_heartbeat_age_seconds')).toHaveLength(1);
    expect(pick(after, 'batchwright_worker_heartbeat_age_seconds')[0]!.value).toBeLessThan(15);
    expect(pick(after, 'batchwright_engine_restarts_total', { model: SIM_MODEL })[0]?.value).toBe(0);
    // HTTP latency by route pattern: the polled batch id appears only as :batch_id.
    const routes = new Set(pick(after, 'batchwright_http_request_duration_seconds_count').map((s) => s.labels.route));
    expect([...routes].some((r) => r?.startsWith('/v1/batches/:'))).toBe(true);
    expect([...routes].some((r) => r?.includes(b.id))).toBe(false);
    expect(
      pick(after, 'batchwright_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/v1/batches',
        status_code: '200',
      })[0]?.value,
    ).toBe(1);

    // Failed requests (5 % simulated 500s, no retries) show in /ops/errors without prompt text.
    if (done.request_counts!.failed > 0) {
      const errs = (await getJson(server, '/ops/errors?limit=20')).body.data as any[];
      const e = errs.find((x) => x.source === 'request' && x.batch_id === b.id);
      expect(e.message).toMatch(new RegExp(`^${done.request_counts!.failed} of 200 requests failed`));
      expect(JSON.stringify(errs)).not.toContain('question number');
    }
  });
});

describe('operator API shapes', () => {
  it('lists workers, engines, swaps, batches and an empty GPU list on a machine without GPUs', async () => {
    server = await startTestServer({ worker: true });
    const { client } = server;
    const r = await client.chat.completions.create({ model: SIM_MODEL, messages: [{ role: 'user', content: 'hi' }] });
    expect(r.choices[0]!.message.content).toBeTruthy();
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(5, SIM_MODEL))),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitForBatch(client, b.id, ['completed']);

    const workers = (await getJson(server, '/ops/workers')).body;
    expect(workers.data).toHaveLength(1);
    expect(workers.data[0]).toMatchObject({ models: [SIM_MODEL], active_model: SIM_MODEL, alive: true });
    expect(typeof workers.data[0].id).toBe('string');
    expect(workers.data[0].age_s).toBeLessThan(15);
    expect(Math.abs(workers.data[0].last_heartbeat_at - Date.now() / 1000)).toBeLessThan(15);

    const engines = (await getJson(server, '/ops/engines')).body.data;
    expect(engines).toEqual([
      {
        worker_id: workers.data[0].id,
        model: SIM_MODEL,
        state: 'ready',
        since: expect.any(Number),
        base_url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
        restarts: 0,
        last_error: null,
        detail: null,
      },
    ]);

    // The swap is published asynchronously: wait for it.
    let swaps: any[] = [];
    for (const end = Date.now() + 10_000; Date.now() < end && swaps.length === 0; await sleep(100))
      swaps = (await getJson(server, '/ops/swaps?limit=5')).body.data;
    expect(swaps[0]).toMatchObject({
      worker_id: workers.data[0].id,
      from: null,
      to: SIM_MODEL,
      reason: 'cold-start',
      duration_ms: expect.any(Number),
      at: expect.any(Number),
    });

    const all = (await getJson(server, '/ops/batches?status=all&limit=10')).body;
    expect(all.object).toBe('list');
    expect(all.data[0]).toEqual({
      id: b.id,
      status: 'completed',
      model: SIM_MODEL,
      endpoint: '/v1/chat/completions',
      created_at: expect.any(Number),
      request_counts: { total: 5, completed: 5, failed: 0 },
      progress: 1,
      throughput_rps: expect.any(Number),
      eta_s: 0,
      waiting_reason: null,
      metadata: null,
    });
    expect((await getJson(server, '/ops/batches')).body.data).toEqual([]); // none active
    expect((await getJson(server, '/ops/batches/batch_nope')).status).toBe(404);
    expect((await getJson(server, '/ops/batches?status=bogus')).status).toBe(400);
    expect((await getJson(server, '/ops/gpus')).body).toEqual({ object: 'list', data: [] });

    const health = (await getJson(server, '/health')).body;
    expect(health.status).toBe('healthy');
    expect(health.reasons).toEqual([]);
    expect(health.checks).toMatchObject({
      redis: 'ok',
      sqlite: 'ok',
      workers: [{ id: workers.data[0].id, ok: true }],
      engines: [{ model: SIM_MODEL, state: 'ready' }],
      gpus: [],
    });
    expect(health.notes).toContain('no GPUs: no live worker has nvidia-smi');
  });
});
