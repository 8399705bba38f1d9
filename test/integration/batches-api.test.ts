import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultModelsYaml, startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { assertOpenAIShape } from '../helpers/contract.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-in-'));

async function upload(s: TestServer, text: string) {
  return s.client.files.create({ file: createReadStream(writeJsonl(tmp(), 'in.jsonl', text)), purpose: 'batch' });
}

async function createBatch(s: TestServer, text: string, extra: Partial<OpenAI.Batches.BatchCreateParams> = {}) {
  const f = await upload(s, text);
  return s.client.batches.create({
    input_file_id: f.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    ...extra,
  });
}

describe('Batches API', () => {
  it('fails validation listing every bad line with its number, code and param', async () => {
    server = await startTestServer();
    const good = (id: string) =>
      JSON.stringify({
        custom_id: id,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: SIM_MODEL, messages: [] },
      });
    const text = [
      good('a'),
      '{not json',
      JSON.stringify({ custom_id: 'b', method: 'GET', url: '/v1/chat/completions', body: { model: SIM_MODEL } }),
      good('a'),
      JSON.stringify({ custom_id: 'c', method: 'POST', url: '/v1/embeddings', body: { model: SIM_MODEL } }),
      JSON.stringify({ custom_id: 'd', method: 'POST', url: '/v1/chat/completions', body: { model: 'no-such-model' } }),
      JSON.stringify({ method: 'POST', url: '/v1/chat/completions', body: { model: SIM_MODEL } }),
      '[1,2]',
    ].join('\n');
    const b = await createBatch(server, text);
    const failed = await waitForBatch(server.client, b.id, ['failed', 'in_progress', 'completed']);
    expect(failed.status).toBe('failed');
    expect(failed.failed_at).toBeGreaterThan(0);
    const errors = failed.errors!.data!.map((e) => [e.line, e.code, e.param]);
    expect(errors).toEqual([
      [2, 'invalid_json_line', null],
      [3, 'invalid_method', 'method'],
      [4, 'duplicate_custom_id', 'custom_id'],
      [5, 'invalid_url', 'url'],
      [6, 'model_not_found', 'body.model'],
      [7, 'missing_custom_id', 'custom_id'],
      [8, 'invalid_json_line', null],
    ]);
    for (const e of failed.errors!.data!) expect(e.message).toMatch(/Line \d+/);
    assertOpenAIShape('Batch', failed);
  });

  it('rejects a batch mixing models (one model per batch, as OpenAI)', async () => {
    server = await startTestServer({ modelsYaml: defaultModelsYaml() + '  - id: other\n    engine: sim\n' });
    const text = [
      JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: { model: SIM_MODEL } }),
      JSON.stringify({ custom_id: 'b', method: 'POST', url: '/v1/chat/completions', body: { model: 'other' } }),
    ].join('\n');
    const b = await waitForBatch(server.client, (await createBatch(server, text)).id, ['failed', 'in_progress']);
    expect(b.errors!.data![0]).toMatchObject({ line: 2, code: 'mismatched_model' });
  });

  it('fails an empty input file with a clear error', async () => {
    server = await startTestServer();
    const b = await waitForBatch(server.client, (await createBatch(server, '\n\n')).id, ['failed', 'in_progress']);
    expect(b.errors!.data![0]).toMatchObject({ code: 'empty_file' });
  });

  it('fails a file with more requests than MAX_BATCH_REQUESTS, naming the first line over the limit', async () => {
    server = await startTestServer({ env: { MAX_BATCH_REQUESTS: '3' } });
    const b = await waitForBatch(server.client, (await createBatch(server, chatLines(5, SIM_MODEL))).id, [
      'failed',
      'in_progress',
    ]);
    expect(b.status).toBe('failed');
    expect(b.errors!.data![0]).toMatchObject({ code: 'too_many_requests', line: 4 });
  });

  it('retries engine 5xx answers with backoff until they succeed', async () => {
    server = await startTestServer({
      worker: true,
      env: { REQUEST_MAX_ATTEMPTS: '20' },
      modelsYaml: defaultModelsYaml({ error_rate: 0.3 }),
    });
    const b = await createBatch(server, chatLines(60, SIM_MODEL));
    const done = await waitForBatch(server.client, b.id, ['completed'], 60_000);
    expect(done.request_counts).toEqual({ total: 60, completed: 60, failed: 0 });
    expect(done.error_file_id).toBeNull();
  });

  it('rejects bad create parameters in the error envelope', async () => {
    server = await startTestServer();
    const f = await upload(server, chatLines(1, SIM_MODEL));
    const bad = async (body: Record<string, unknown>) => {
      const res = await fetch(`${server!.baseUrl}/v1/batches`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as { error: Record<string, unknown> } };
    };
    const base = { input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' };
    let r = await bad({ ...base, completion_window: '48h' });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ type: 'invalid_request_error', param: 'completion_window' });
    assertOpenAIShape('ErrorResponse', r.body);
    r = await bad({ ...base, endpoint: '/v1/responses' });
    expect(r.body.error.param).toBe('endpoint');
    r = await bad({ ...base, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) });
    expect(r.status).toBe(400);
    expect(r.body.error.param).toBe('metadata');
    r = await bad({ ...base, metadata: { k: 'x'.repeat(513) } });
    expect(r.status).toBe(400);
    r = await bad({ endpoint: '/v1/chat/completions', completion_window: '24h' });
    expect(r.body.error).toMatchObject({ code: 'missing_required_parameter', param: 'input_file_id' });
    r = await bad({ ...base, input_file_id: 'file-doesnotexist' });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('file_not_found');
    r = await bad({ ...base, surprise: 1 });
    expect(r.status).toBe(400);
    expect(r.body.error.param).toBe('surprise');
    const res = await fetch(`${server.baseUrl}/v1/batches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"input_file_id":',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
  });

  it('answers unknown batch ids with 404 batch_not_found through the SDK', async () => {
    server = await startTestServer();
    const err = await server.client.batches.retrieve('batch_nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('batch_not_found');
    const err2 = await server.client.batches.cancel('batch_nope').catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('lists batches newest first with after/limit pagination', async () => {
    server = await startTestServer();
    const f = await upload(server, chatLines(1, SIM_MODEL));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(
        (
          await server.client.batches.create({
            input_file_id: f.id,
            endpoint: '/v1/chat/completions',
            completion_window: '24h',
            metadata: { i: String(i) },
          })
        ).id,
      );
    const page1 = await server.client.batches.list({ limit: 2 });
    expect(page1.data.map((b) => b.id)).toEqual([ids[4], ids[3]]);
    expect(page1.has_more).toBe(true);
    assertOpenAIShape('ListBatchesResponse', { object: 'list', data: page1.data, has_more: page1.has_more });
    const all: string[] = [];
    for await (const b of server.client.batches.list({ limit: 2 })) all.push(b.id);
    expect(all).toEqual([...ids].reverse());
    const last = await server.client.batches.list({ limit: 2, after: ids[1] });
    expect(last.data.map((b) => b.id)).toEqual([ids[0]]);
    expect(last.has_more).toBe(false);
    const res = await fetch(`${server.baseUrl}/v1/batches?limit=101`);
    expect(res.status).toBe(400);
  });

  it('returns the first batch for a repeated Idempotency-Key, and 409 for a different body', async () => {
    server = await startTestServer();
    const f = await upload(server, chatLines(1, SIM_MODEL));
    const params = {
      input_file_id: f.id,
      endpoint: '/v1/chat/completions' as const,
      completion_window: '24h' as const,
    };
    const a = await server.client.batches.create(params, { headers: { 'Idempotency-Key': 'k-1' } });
    const b = await server.client.batches.create(params, { headers: { 'Idempotency-Key': 'k-1' } });
    expect(b.id).toBe(a.id);
    const c = await server.client.batches
      .create({ ...params, metadata: { x: 'y' } }, { headers: { 'Idempotency-Key': 'k-1' } })
      .catch((e: unknown) => e);
    expect(c).toBeInstanceOf(OpenAI.ConflictError);
    // An SDK retry (x-stainless-retry-count > 0) without a key finds the first copy too.
    const d = await server.client.batches.create({ ...params, metadata: { r: '1' } });
    const e = await server.client.batches.create(
      { ...params, metadata: { r: '1' } },
      { headers: { 'x-stainless-retry-count': '1' } },
    );
    expect(e.id).toBe(d.id);
    const list = await server.client.batches.list({ limit: 100 });
    expect(list.data).toHaveLength(2);
  });

  it('cancels a running batch: partial results kept, batch_cancelled lines for the rest', async () => {
    server = await startTestServer({
      worker: true,
      modelsYaml: defaultModelsYaml({ ttft_ms: 50, max_concurrency: 4 }),
    });
    const b = await createBatch(server, chatLines(400, SIM_MODEL));
    const deadline = Date.now() + 30_000;
    while ((await server.client.batches.retrieve(b.id)).request_counts!.completed < 10) {
      if (Date.now() > deadline) throw new Error('batch made no progress');
      await new Promise((r) => setTimeout(r, 50));
    }
    const cancelling = await server.client.batches.cancel(b.id);
    expect(['cancelling', 'cancelled']).toContain(cancelling.status);
    const done = await waitForBatch(server.client, b.id, ['cancelled']);
    expect(done.cancelling_at).toBeGreaterThan(0);
    expect(done.cancelled_at).toBeGreaterThan(0);
    const out = await readLinesOf(server.client, done.output_file_id);
    const err = await readLinesOf(server.client, done.error_file_id);
    const ids = [...out, ...err].map((l) => l.custom_id);
    expect(new Set(ids).size).toBe(400);
    expect(ids).toHaveLength(400);
    const cancelled = err.filter((l) => l.error?.code === 'batch_cancelled');
    expect(cancelled.length).toBeGreaterThan(0);
    expect(out.length).toBeGreaterThanOrEqual(10);
    expect(done.request_counts).toEqual({ total: 400, completed: out.length, failed: err.length });
    // Cancelling again is a no-op; the terminal batch is returned as it is.
    expect((await server.client.batches.cancel(b.id)).status).toBe('cancelled');
  });

  it('refuses to cancel a completed batch with 409', async () => {
    server = await startTestServer({ worker: true });
    const b = await createBatch(server, chatLines(3, SIM_MODEL));
    await waitForBatch(server.client, b.id, ['completed']);
    const err = await server.client.batches.cancel(b.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.ConflictError);
    expect((err as InstanceType<typeof OpenAI.ConflictError>).code).toBe('batch_not_cancellable');
  });

  it('expires a batch whose window passes: completed work kept, batch_expired lines for the rest', async () => {
    server = await startTestServer({
      worker: true,
      env: { COMPLETION_WINDOW_S: '4', EXPIRY_SWEEP_MS: '200' },
      modelsYaml: defaultModelsYaml({ ttft_ms: 100, max_concurrency: 2 }),
    });
    const b = await createBatch(server, chatLines(400, SIM_MODEL));
    const done = await waitForBatch(server.client, b.id, ['expired', 'completed'], 30_000);
    expect(done.status).toBe('expired');
    expect(done.expired_at).toBeGreaterThan(0);
    const out = await readLinesOf(server.client, done.output_file_id);
    const err = await readLinesOf(server.client, done.error_file_id);
    expect(out.length).toBeGreaterThan(0);
    expect(err.every((l) => l.error?.code === 'batch_expired')).toBe(true);
    expect(out.length + err.length).toBe(400);
    expect(new Set([...out, ...err].map((l) => l.custom_id)).size).toBe(400);
    expect(done.request_counts).toEqual({ total: 400, completed: out.length, failed: err.length });
  });

  it('puts engine 4xx answers in the error file with their status and body', async () => {
    server = await startTestServer({ worker: true });
    const text = chatLines(6, SIM_MODEL, (i) => (i % 2 ? { max_tokens: -1 } : {}));
    const b = await createBatch(server, text);
    const done = await waitForBatch(server.client, b.id, ['completed']);
    expect(done.request_counts).toEqual({ total: 6, completed: 3, failed: 3 });
    const err = await readLinesOf(server.client, done.error_file_id);
    expect(err.map((l) => l.custom_id).sort()).toEqual(['req-1', 'req-3', 'req-5']);
    for (const l of err) {
      expect(l.response.status_code).toBe(400);
      expect(l.response.body.error).toMatchObject({ type: 'invalid_request_error' });
      expect(typeof l.response.body.error.message).toBe('string');
      expect(l.id).toMatch(/^batch_req_/);
      assertOpenAIShape('BatchRequestOutput', l);
    }
    const out = await readLinesOf(server.client, done.output_file_id);
    for (const l of out) assertOpenAIShape('BatchRequestOutput', l);
    assertOpenAIShape('Batch', done);
    const outFile = await server.client.files.retrieve(done.output_file_id!);
    expect(outFile.purpose).toBe('batch_output');
  });
});
