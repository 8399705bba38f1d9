/**
 * The embedded engine (llama.cpp in Node via node-llama-cpp) on the generated tiny model, started
 * through the ModelManager like any engine. The tiny "cycle" model answers every chat with exactly
 * "abcdefghijklmnopqrstuvwxyz" then its end token, so every assertion is on exact text.
 */
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { modelSchema } from '../../src/config/models.js';
import { ModelManager, type EngineHandle } from '../../src/engines/model-manager.js';
import { StopMatcher } from '../../src/engines/embedded/stop.js';
import { ensureTinyModel } from '../../src/engines/tiny-model.js';
import { createLogger } from '../../src/log/logger.js';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';

const ABC = 'abcdefghijklmnopqrstuvwxyz';
const MODEL = 'tiny';
/** Beyond the tiny model's training context (512), so that an ignore_eos generation runs long enough to abort. */
const CTX = 4096;

type Json = Record<string, any>;

let dir: string;
let gguf: string;
let mm: ModelManager;
let h: EngineHandle;
let readyMs: number;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'engine-embedded-'));
  gguf = await ensureTinyModel(dir);
  const model = modelSchema.parse({
    id: MODEL,
    engine: 'embedded',
    path: gguf,
    startup_timeout_s: 60,
    options: { max_num_seqs: 4, max_model_len: CTX },
  });
  mm = new ModelManager({
    models: [model],
    logDir: path.join(dir, 'logs'),
    log: createLogger('silent'),
    stopTimeoutMs: 2_000,
    restartBackoffMs: 20,
  });
  const t0 = Date.now();
  h = await mm.ensureReady(MODEL);
  readyMs = Date.now() - t0;
});

afterAll(async () => {
  await mm?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

async function post(p: string, body: unknown): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${h.baseUrl}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Json };
}

const chat = (extra: Json = {}) =>
  post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'Say the alphabet' }], ...extra });

/** SSE `data:` payloads of a streamed response, [DONE] last. */
async function sse(p: string, body: unknown): Promise<string[]> {
  const res = await fetch(`${h.baseUrl}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const text = await res.text();
  return text
    .split('\n\n')
    .filter(Boolean)
    .map((e) => {
      expect(e.startsWith('data: ')).toBe(true);
      return e.slice(6);
    });
}

function expectVllmError(r: { status: number; json: Json }, status: number, message: RegExp): void {
  expect(r.status).toBe(status);
  expect(r.json).toEqual({
    object: 'error',
    message: expect.stringMatching(message),
    type: status === 404 ? 'NotFoundError' : 'BadRequestError',
    param: null,
    code: status,
  });
}

describe('embedded engine (node-llama-cpp) on the tiny generated model', () => {
  it('becomes ready within a few seconds and lists the model with its context size', async () => {
    expect(readyMs).toBeLessThan(20_000); // ~1-2 s on an idle 2-core machine; generous for loaded CI
    expect(mm.info(MODEL)).toMatchObject({ engine: 'embedded', state: 'ready', restarts: 0 });
    expect((await fetch(`${h.baseUrl}/health`)).status).toBe(200);
    const models = (await (await fetch(`${h.baseUrl}/v1/models`)).json()) as Json;
    expect(models).toMatchObject({ object: 'list', data: [{ id: MODEL, object: 'model', max_model_len: CTX }] });
  });

  it('answers a chat with exactly the alphabet, finish_reason stop, and usage', async () => {
    const r = await chat({ temperature: 0.7, seed: 42 });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ object: 'chat.completion', model: MODEL });
    expect(r.json.id).toMatch(/^chatcmpl-/);
    expect(r.json.choices).toEqual([
      {
        index: 0,
        message: { role: 'assistant', content: ABC },
        logprobs: null,
        finish_reason: 'stop',
        stop_reason: null,
      },
    ]);
    const u = r.json.usage;
    expect(u.completion_tokens).toBe(26);
    expect(u.prompt_tokens).toBeGreaterThan(10); // ChatML template + BOS + the message bytes
    expect(u.total_tokens).toBe(u.prompt_tokens + u.completion_tokens);
  });

  it('cuts at max_tokens (finish_reason length) and at stop strings', async () => {
    const cut = await chat({ max_tokens: 5 });
    expect(cut.json.choices[0]).toMatchObject({
      message: { content: 'abcde' },
      finish_reason: 'length',
      stop_reason: null,
    });
    expect(cut.json.usage.completion_tokens).toBe(5);
    const mct = await chat({ max_tokens: 100, max_completion_tokens: 3 });
    expect(mct.json.choices[0]).toMatchObject({ message: { content: 'abc' }, finish_reason: 'length' });

    const stop = await chat({ stop: ['j'] });
    expect(stop.json.choices[0]).toMatchObject({
      message: { content: 'abcdefghi' },
      finish_reason: 'stop',
      stop_reason: 'j',
    });
    expect(stop.json.usage.completion_tokens).toBe(10); // the token that completed the stop string counts
    const multi = await chat({ stop: ['xyz!', 'mno', 'q'] });
    expect(multi.json.choices[0]).toMatchObject({ message: { content: 'abcdefghijkl' }, stop_reason: 'mno' });
    const unmatched = await chat({ stop: 'xyz!' });
    expect(unmatched.json.choices[0]).toMatchObject({
      message: { content: ABC },
      finish_reason: 'stop',
      stop_reason: null,
    });
  });

  it('gives several choices with n', async () => {
    const r = await chat({ n: 3, max_tokens: 4 });
    expect(r.json.choices.map((c: Json) => [c.index, c.message.content])).toEqual([
      [0, 'abcd'],
      [1, 'abcd'],
      [2, 'abcd'],
    ]);
    expect(r.json.usage.completion_tokens).toBe(12);
  });

  it('streams chunks that concatenate to the same text, with usage when include_usage', async () => {
    const events = await sse('/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Json);
    expect(chunks[0]!.choices[0].delta).toEqual({ role: 'assistant', content: '' });
    for (const c of chunks)
      expect(c).toMatchObject({ object: 'chat.completion.chunk', model: MODEL, id: chunks[0]!.id });
    const text = chunks.flatMap((c) => c.choices.map((ch: Json) => ch.delta.content ?? '')).join('');
    expect(text).toBe(ABC);
    expect(chunks.filter((c) => c.choices.length > 0).length).toBeGreaterThan(2); // really streamed, not one blob
    const finishes = chunks.flatMap((c) => c.choices.map((ch: Json) => ch.finish_reason)).filter(Boolean);
    expect(finishes).toEqual(['stop']);
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toMatchObject({ completion_tokens: 26, total_tokens: usage.usage.prompt_tokens + 26 });

    const plain = await sse('/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stop: ['f'],
    });
    const parsed = plain.slice(0, -1).map((e) => JSON.parse(e) as Json);
    expect(parsed.every((c) => !('usage' in c))).toBe(true);
    expect(parsed.flatMap((c) => c.choices.map((ch: Json) => ch.delta.content ?? '')).join('')).toBe('abcde');
    expect(parsed.at(-1)!.choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: 'f' });
  });

  it('serves /v1/completions, streaming or not', async () => {
    // After "\n" the cycle model writes the alphabet, whatever came before.
    const r = await post('/v1/completions', { model: MODEL, prompt: 'The alphabet:\n', temperature: 0 });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      object: 'text_completion',
      choices: [{ index: 0, text: ABC, finish_reason: 'stop', logprobs: null }],
    });
    expect(r.json.usage).toEqual({ prompt_tokens: 15, completion_tokens: 26, total_tokens: 41 }); // BOS + 14 bytes
    // Special tokens in a prompt are parsed (as vLLM's tokenizer does): the ChatML text of a chat is the same prompt.
    const raw = await post('/v1/completions', {
      prompt: '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n',
      max_tokens: 3,
    });
    const viaChat = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
    expect(raw.json.choices[0].text).toBe('abc');
    expect(raw.json.usage.prompt_tokens).toBe(viaChat.json.usage.prompt_tokens);
    const ids = await post('/v1/completions', { prompt: [1, 126, 16], max_tokens: 2 }); // BOS "x" "\n"
    expect(ids.json.choices[0].text).toBe('ab');
    expectVllmError(await post('/v1/completions', { prompt: [1, 99999] }), 400, /out of vocabulary/);
    const two = await post('/v1/completions', { prompt: ['x\n', 'y\n'], max_tokens: 2 });
    expect(two.json.choices.map((c: Json) => [c.index, c.text, c.finish_reason])).toEqual([
      [0, 'ab', 'length'],
      [1, 'ab', 'length'],
    ]);
    const events = await sse('/v1/completions', {
      prompt: 'go\n',
      stream: true,
      max_tokens: 7,
      stream_options: { include_usage: true },
    });
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Json);
    expect(chunks.flatMap((c) => c.choices.map((ch: Json) => ch.text)).join('')).toBe('abcdefg');
    expect(chunks.at(-1)!.usage.completion_tokens).toBe(7);
  });

  it("answers bad requests with a 400 in vLLM's flat error shape", async () => {
    expectVllmError(await chat({ max_tokens: -1 }), 400, /max_tokens must be at least 1, got -1/);
    expectVllmError(await chat({ temperature: 5 }), 400, /temperature/);
    expectVllmError(await chat({ stop: 7 }), 400, /stop must be/);
    expectVllmError(await post('/v1/chat/completions', { messages: [] }), 400, /messages/);
    expectVllmError(await post('/v1/completions', { model: MODEL }), 400, /prompt is required/);
    expectVllmError(await chat({ logprobs: true }), 400, /logprobs is not supported/);
    // The byte-level vocabulary makes 5000 characters 5000+ tokens: beyond the 4096-token context.
    const long = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
    expectVllmError(long, 400, /maximum context length is 4096 tokens\. However, your request has \d+ input tokens/);
    expectVllmError(
      await chat({ max_tokens: 4090 }),
      400,
      /maximum context length is 4096 tokens\. However, you requested \d+ tokens/,
    );
    expectVllmError(
      await post('/v1/embeddings', { model: MODEL, input: 'x' }),
      400,
      /embeddings not supported by this engine/,
    );
    expectVllmError(await chat({ model: 'other-model' }), 404, /`other-model` does not exist/);
    const bad = await fetch(`${h.baseUrl}/v1/chat/completions`, { method: 'POST', body: '{not json' });
    expect(bad.status).toBe(400);
  });

  it('serves 4 concurrent requests on its 4 sequences, and queues the rest', async () => {
    const rs = await Promise.all(
      Array.from({ length: 6 }, (_, i) => chat({ seed: i, max_tokens: i === 5 ? 8 : undefined })),
    );
    for (const [i, r] of rs.entries()) {
      expect(r.status).toBe(200);
      expect(r.json.choices[0].message.content).toBe(i === 5 ? 'abcdefgh' : ABC);
    }
  });

  it('goes on past the end token with ignore_eos, and stops generating when the client goes away', async () => {
    const generated = async () => {
      const text = await (await fetch(`${h.baseUrl}/metrics`)).text();
      return Number(/^vllm:generation_tokens_total\{[^}]*\} (\S+)$/m.exec(text)![1]);
    };
    const long = await post('/v1/completions', { prompt: 'x\n', ignore_eos: true, max_tokens: 100 });
    expect(long.json.choices[0]).toMatchObject({ finish_reason: 'length' });
    expect(long.json.choices[0].text.startsWith(ABC)).toBe(true);
    expect(long.json.usage.completion_tokens).toBe(100);

    const before = await generated();
    const ac = new AbortController();
    // ignore_eos keeps the cycle model going to the end of the 4096-token context: seconds of work.
    const res = await fetch(`${h.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], stream: true, ignore_eos: true }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    const metric = async () => {
      const text = await (await fetch(`${h.baseUrl}/metrics`)).text();
      return Number(/^vllm:num_requests_running\{[^}]*\} (\S+)$/m.exec(text)![1]);
    };
    const deadline = Date.now() + 5_000;
    while ((await metric()) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(await metric()).toBe(0);
    expect(await generated()).toBeLessThan(before + 2_000); // not the ~4070 tokens of a finished run
    expect((await chat()).json.choices[0].message.content).toBe(ABC);
  });

  it('is restarted by the ModelManager after a SIGKILL, and the next request succeeds', async () => {
    const pid = mm.info(MODEL).pid!;
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 5_000;
    while (mm.info(MODEL).state !== 'failed' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(mm.info(MODEL).state).toBe('failed');
    h = await mm.ensureReady(MODEL);
    expect(mm.info(MODEL)).toMatchObject({ state: 'ready', restarts: 1 });
    expect(mm.info(MODEL).pid).not.toBe(pid);
    const r = await h.client.post(
      '/v1/chat/completions',
      { model: MODEL, messages: [{ role: 'user', content: 'again' }] },
      { timeoutMs: 20_000 },
    );
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString()).choices[0].message.content).toBe(ABC);
  });
});

describe('StopMatcher', () => {
  const run = (stops: string[], pieces: string[], include = false) => {
    const m = new StopMatcher(stops, include);
    const out: string[] = [];
    for (const p of pieces) {
      const r = m.push(p);
      out.push(r.emit);
      if (r.stop !== null) return { out, stop: r.stop };
    }
    out.push(m.flush());
    return { out, stop: null };
  };

  it('holds back a possible stop prefix and never emits any part of a stop string', () => {
    expect(run(['cde'], ['ab', 'c', 'd', 'e', 'f'])).toEqual({ out: ['ab', '', '', ''], stop: 'cde' });
    expect(run(['cde'], ['ab', 'c', 'd', 'x'])).toEqual({ out: ['ab', '', '', 'cdx', ''], stop: null });
    expect(run(['cd', 'bcd'], ['abcdef'])).toEqual({ out: ['a'], stop: 'bcd' }); // earliest match wins
    expect(run(['cd'], ['abcdef'], true)).toEqual({ out: ['abcd'], stop: 'cd' });
    expect(run([], ['a', 'b'])).toEqual({ out: ['a', 'b', ''], stop: null });
    expect(run(['zz'], ['az'])).toEqual({ out: ['a', 'z'], stop: null }); // held, then flushed at the end
  });
});

describe('a batch on the embedded demo model', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('completes a whole batch through the Batch API', async () => {
    const modelsYaml =
      'models:\n  - id: demo-tiny\n    engine: embedded\n    path: builtin:tiny-cycle\n    startup_timeout_s: 60\n    options:\n      max_num_seqs: 4\n      max_model_len: 512\n';
    server = await startTestServer({ worker: true, modelsYaml });
    const { client } = server;
    const input = writeJsonl(
      mkdtempSync(path.join(tmpdir(), 'bw-in-')),
      'in.jsonl',
      chatLines(12, 'demo-tiny', (i) => (i % 3 === 0 ? { max_tokens: 5 } : {})),
    );
    const file = await client.files.create({ file: createReadStream(input), purpose: 'batch' });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await waitForBatch(client, created.id, ['completed', 'failed'], 120_000);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 12, completed: 12, failed: 0 });
    expect(done.usage?.output_tokens).toBe(4 * 5 + 8 * 26);
    const out = await readLinesOf(client, done.output_file_id);
    expect(out).toHaveLength(12);
    for (const l of out) {
      const i = Number(l.custom_id.slice(4));
      expect(l.response.status_code).toBe(200);
      expect(l.response.body.choices[0].message.content).toBe(i % 3 === 0 ? 'abcde' : ABC);
    }
    expect(done.error_file_id).toBeNull();
  });
});
