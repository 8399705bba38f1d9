import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { waitForBatch, writeJsonl } from '../helpers/batch.js';

const A = 'sim-a';
const B = 'sim-b';
const modelsYaml = `models:
  - id: ${A}
    engine: sim
    startup_timeout_s: 30
    options: { max_num_seqs: 8 }
    sim: { output_tokens: 4 }
  - id: ${B}
    engine: sim
    startup_timeout_s: 30
    options: { max_num_seqs: 8 }
    sim: { output_tokens: 6 }
`;

const ZEBRAS = 'tell me about zebras.\nThey say "stripes"';

/** Six chat requests; q-3 asks for more tokens than the context has, so it fails. */
function lines(model: string): string {
  return Array.from({ length: 6 }, (_, i) =>
    JSON.stringify({
      custom_id: `q-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: {
        model,
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: i === 4 ? ZEBRAS : `question ${i}` },
        ],
        ...(i === 3 ? { max_tokens: 1_000_000 } : {}),
      },
    }),
  ).join('\n');
}

let server: TestServer;
let batchA: string;
let batchB: string;
const get = async (p: string) => {
  const r = await fetch(`${server.baseUrl}${p}`);
  return { status: r.status, headers: r.headers, text: await r.text() };
};
const json = async (p: string) => {
  const r = await get(p);
  expect(r.status, r.text).toBe(200);
  return JSON.parse(r.text) as Record<string, any>;
};

beforeAll(async () => {
  server = await startTestServer({ worker: true, modelsYaml });
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-ops-'));
  const ids: string[] = [];
  for (const model of [A, B]) {
    const file = await server.client.files.create({
      file: createReadStream(writeJsonl(dir, `${model}.jsonl`, lines(model))),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    ids.push(b.id);
  }
  [batchA, batchB] = ids as [string, string];
  for (const id of ids)
    expect((await waitForBatch(server.client, id, ['completed', 'failed'], 120_000)).status).toBe('completed');
}, 180_000);
afterAll(async () => server?.close());

describe('GET /ops/batches/:id/results', () => {
  it('lists each request with its input messages, answer, tokens, latency and error', async () => {
    const r = await json(`/ops/batches/${batchA}/results`);
    expect(r.total).toBe(6);
    expect(r.batch).toMatchObject({ id: batchA, model: A, status: 'completed' });
    expect(r.data.map((x: any) => x.custom_id)).toEqual(['q-0', 'q-1', 'q-2', 'q-3', 'q-4', 'q-5']);
    const q1 = r.data[1];
    expect(q1.input).toEqual([
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'question 1' },
    ]);
    expect(q1.status).toBe('ok');
    expect(q1.output).toContain('question');
    expect(q1.finish_reason).toBe('stop');
    expect(q1.usage.completion_tokens).toBe(4);
    expect(q1.usage.prompt_tokens).toBeGreaterThan(0);
    expect(typeof q1.latency_ms).toBe('number');
    expect(q1.error).toBeNull();
    expect(q1.starred).toBe(false);
    const q3 = r.data[3];
    expect(q3.status).toBe('error');
    expect(q3.output).toBeNull();
    expect(q3.error.message).toMatch(/token|context|length/i);
  });

  it('searches custom_id, input and output text, and filters by status', async () => {
    const zebra = await json(`/ops/batches/${batchA}/results?q=ZEBRAS`);
    expect(zebra.data.map((x: any) => x.custom_id)).toEqual(['q-4']);
    // Text with JSON escapes in the file (a newline, quotes), and a needle that has a quote.
    for (const needle of ['stripes', '"stripes"', 'zebras.\nthey']) {
      const r = await json(`/ops/batches/${batchA}/results?q=${encodeURIComponent(needle)}`);
      expect(
        r.data.map((x: any) => x.custom_id),
        needle,
      ).toEqual(['q-4']);
    }
    const byId = await json(`/ops/batches/${batchA}/results?q=q-5`);
    expect(byId.data.map((x: any) => x.custom_id)).toEqual(['q-5']);
    const errors = await json(`/ops/batches/${batchA}/results?status=error`);
    expect(errors.data.map((x: any) => x.custom_id)).toEqual(['q-3']);
    const ok = await json(`/ops/batches/${batchA}/results?status=ok&offset=1&limit=2`);
    expect(ok.total).toBe(5);
    expect(ok.data.map((x: any) => x.custom_id)).toEqual(['q-1', 'q-2']);
    expect(ok.has_more).toBe(true);
    const none = await json(`/ops/batches/${batchA}/results?q=nothing-matches-this`);
    expect(none).toMatchObject({ total: 0, data: [] });
  });

  it('answers 404 for an unknown batch and 400 for a bad filter', async () => {
    const r = await get('/ops/batches/batch_doesnotexist/results');
    expect(r.status).toBe(404);
    expect(JSON.parse(r.text).error.code).toBe('batch_not_found');
    expect((await get(`/ops/batches/${batchA}/results?status=maybe`)).status).toBe(400);
  });
});

describe('stars and the fine-tuning export', () => {
  it('stars answers, filters on them and exports them as chat fine-tuning lines', async () => {
    for (const id of ['q-1', 'q-4']) {
      const r = await fetch(`${server.baseUrl}/ops/batches/${batchA}/stars/${id}`, { method: 'PUT' });
      expect(r.status).toBe(200);
      expect(await r.json()).toMatchObject({ custom_id: id, starred: true });
    }
    // Starring twice is harmless; an error result can be starred but is not exported.
    expect((await fetch(`${server.baseUrl}/ops/batches/${batchA}/stars/q-1`, { method: 'PUT' })).status).toBe(200);
    expect((await fetch(`${server.baseUrl}/ops/batches/${batchA}/stars/q-3`, { method: 'PUT' })).status).toBe(200);
    const missing = await fetch(`${server.baseUrl}/ops/batches/${batchA}/stars/nope`, { method: 'PUT' });
    expect(missing.status).toBe(404);
    expect((await missing.json()).error.code).toBe('result_not_found');

    const starred = await json(`/ops/batches/${batchA}/results?starred=1`);
    expect(starred.data.map((x: any) => x.custom_id)).toEqual(['q-1', 'q-3', 'q-4']);

    const exp = await get(`/ops/stars/export?batch_ids=${batchA}`);
    expect(exp.status).toBe(200);
    expect(exp.headers.get('content-type')).toContain('application/jsonl');
    expect(exp.headers.get('x-batchwright-skipped')).toBe('1');
    const out = exp.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(out).toHaveLength(2);
    const all = await json(`/ops/batches/${batchA}/results`);
    const answer = (cid: string) => all.data.find((x: any) => x.custom_id === cid).output;
    expect(out[0]).toEqual({
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'question 1' },
        { role: 'assistant', content: answer('q-1') },
      ],
    });
    expect(out[1].messages[1].content).toBe(ZEBRAS);
    expect(out[1].messages[2]).toEqual({ role: 'assistant', content: answer('q-4') });

    const del = await fetch(`${server.baseUrl}/ops/batches/${batchA}/stars/q-3`, { method: 'DELETE' });
    expect(await del.json()).toMatchObject({ starred: false });
    const after = await get(`/ops/stars/export`);
    expect(after.headers.get('x-batchwright-skipped')).toBe('0');
    expect(after.text.trim().split('\n')).toHaveLength(2);
  });
});

describe('GET /ops/compare', () => {
  it('joins two batches over the same inputs by custom_id', async () => {
    const r = await json(`/ops/compare?batch_ids=${batchA},${batchB}`);
    expect(r.batches.map((b: any) => b.model)).toEqual([A, B]);
    expect(r.total).toBe(6);
    expect(r.data.map((x: any) => x.custom_id)).toEqual(['q-0', 'q-1', 'q-2', 'q-3', 'q-4', 'q-5']);
    const row = r.data[4];
    expect(row.input[1].content).toBe(ZEBRAS);
    expect(row.results.map((x: any) => x.batch_id)).toEqual([batchA, batchB]);
    expect(row.results.map((x: any) => x.usage.completion_tokens)).toEqual([4, 6]);
    expect(row.results[0].starred).toBe(true);
    expect(row.results[1].starred).toBe(false);
    expect(r.data[3].results.every((x: any) => x.status === 'error')).toBe(true);
  });

  it('orders by the first batch, appends custom_ids only later batches have, and shows null where a batch lacks one', async () => {
    const text = ['q-5', 'extra-1']
      .map((id) =>
        JSON.stringify({
          custom_id: id,
          method: 'POST',
          url: '/v1/chat/completions',
          body: { model: B, messages: [{ role: 'user', content: `only ${id}` }] },
        }),
      )
      .join('\n');
    const file = await server.client.files.create({ file: new File([text], 'partial.jsonl'), purpose: 'batch' });
    const c = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    expect((await waitForBatch(server.client, c.id, ['completed'], 120_000)).status).toBe('completed');
    const r = await json(`/ops/compare?batch_ids=${batchA},${c.id}`);
    expect(r.total).toBe(7);
    expect(r.data.map((x: any) => x.custom_id)).toEqual(['q-0', 'q-1', 'q-2', 'q-3', 'q-4', 'q-5', 'extra-1']);
    expect(r.data[0].results[1]).toBeNull();
    expect(r.data[5].results.map((x: any) => x.status)).toEqual(['ok', 'ok']);
    const extra = r.data[6];
    expect(extra.results[0]).toBeNull();
    expect(extra.input).toEqual([{ role: 'user', content: 'only extra-1' }]);
    const page2 = await json(`/ops/compare?batch_ids=${batchA},${c.id}&offset=5&limit=1`);
    expect(page2.data.map((x: any) => x.custom_id)).toEqual(['q-5']);
    expect(page2.has_more).toBe(true);
  });

  it('needs at least two batch ids', async () => {
    const r = await get(`/ops/compare?batch_ids=${batchA}`);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.text).error.param).toBe('batch_ids');
  });
});

describe('benchmarks', () => {
  it('records runs and lists them per model, newest first', async () => {
    const post = (body: unknown) =>
      fetch(`${server.baseUrl}/ops/benchmarks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const first = await post({
      model: A,
      kind: 'batch',
      requests_per_s: 120.5,
      tokens_per_s: 2000,
      latency_p50_ms: 40,
      latency_p95_ms: 90,
      created_at: 1_700_000_000,
      details: { n: 100 },
    });
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({
      object: 'benchmark_run',
      model: A,
      requests_per_s: 120.5,
      details: { n: 100 },
    });
    expect((await post({ model: A, kind: 'batch', requests_per_s: 130 })).status).toBe(200);
    expect((await post({ model: B, kind: 'proxy', latency_p50_ms: 12 })).status).toBe(200);
    const bad = await post({ model: A, requests_per_s: -1 });
    expect(bad.status).toBe(400);

    const forA = await json(`/ops/benchmarks?model=${A}`);
    expect(forA.data.map((x: any) => x.requests_per_s)).toEqual([130, 120.5]);
    const all = await json('/ops/benchmarks');
    expect(all.data).toHaveLength(3);
  });
});
