/**
 * Interactive inference end to end: the real API, engine router and worker, real simulator
 * processes, and the official SDK as the client.
 */
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultModelsYaml, SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';

/** Base URLs of the ready engines the workers advertise for `model` (worker heartbeats in Redis). */
async function engineUrls(server: TestServer, model = SIM_MODEL): Promise<string[]> {
  const redis = new Redis(server.redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1 });
  try {
    const keys = await redis.keys(`${server.prefix}:worker:*`);
    const values = keys.length ? await redis.mget(...keys) : [];
    const urls: string[] = [];
    for (const v of values) {
      if (!v) continue;
      const hb = JSON.parse(v) as { engines?: { model: string; state: string; baseUrl: string | null }[] };
      for (const e of hb.engines ?? []) if (e.model === model && e.state === 'ready' && e.baseUrl) urls.push(e.baseUrl);
    }
    return urls;
  } finally {
    redis.disconnect();
  }
}

interface SimStats {
  served: number;
  running: number;
  waiting: number;
  aborted: number;
  rejected: number;
}

async function simStats(baseUrl: string): Promise<SimStats> {
  const r = await fetch(`${baseUrl}/sim/stats`);
  return (await r.json()) as SimStats;
}

describe('inference proxy (fast simulator: 8 output tokens)', () => {
  let server: TestServer;
  let client: OpenAI;

  beforeAll(async () => {
    server = await startTestServer({ worker: true });
    client = server.client;
  });
  afterAll(async () => {
    await server?.close();
  });

  const messages = [
    { role: 'system' as const, content: 'be brief' },
    { role: 'user' as const, content: 'hello there world' },
  ];
  // Simulator: "You said: <words of the last user message> tok0 tok1 …", 8 words in all.
  const expectedText = 'You said: hello there world tok0 tok1 tok2';

  it('answers a chat completion with the exact text, finish_reason and usage', async () => {
    const r = await client.chat.completions.create({ model: SIM_MODEL, messages });
    expect(r.object).toBe('chat.completion');
    expect(r.model).toBe(SIM_MODEL);
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.message.role).toBe('assistant');
    expect(r.choices[0]!.message.content).toBe(expectedText);
    expect(r.choices[0]!.finish_reason).toBe('stop');
    // prompt: 2 + 3 words + 1 per message
    expect(r.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8, total_tokens: 15 });

    const cut = await client.chat.completions.create({ model: SIM_MODEL, messages, max_tokens: 4 });
    expect(cut.choices[0]!.message.content).toBe('You said: hello there');
    expect(cut.choices[0]!.finish_reason).toBe('length');
  });

  it('answers a completion', async () => {
    const r = await client.completions.create({ model: SIM_MODEL, prompt: 'one two' });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0]!.text).toBe('You said: one two tok0 tok1 tok2 tok3');
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 8, total_tokens: 10 });
  });

  it('answers embeddings', async () => {
    const r = await client.embeddings.create({ model: SIM_MODEL, input: ['alpha beta', 'gamma'] });
    expect(r.object).toBe('list');
    expect(r.data).toHaveLength(2);
    for (const [i, d] of r.data.entries()) {
      expect(d.index).toBe(i);
      expect(d.embedding).toHaveLength(8);
      const norm = Math.sqrt(d.embedding.reduce((s, x) => s + x * x, 0));
      expect(norm).toBeCloseTo(1, 5);
    }
    expect(r.data[0]!.embedding).not.toEqual(r.data[1]!.embedding);
    expect(r.usage.prompt_tokens).toBe(3);
    // Deterministic: the same input gives the same vector.
    const again = await client.embeddings.create({ model: SIM_MODEL, input: 'gamma' });
    expect(again.data[0]!.embedding).toEqual(r.data[1]!.embedding);
  });

  it('streams a chat completion: chunks in order, same text as non-streaming, usage at the end', async () => {
    const stream = await client.chat.completions.create({
      model: SIM_MODEL,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.length).toBeGreaterThanOrEqual(9); // 8 tokens + the usage chunk
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    expect(withChoices[0]!.choices[0]!.delta.role).toBe('assistant');
    const text = withChoices.map((c) => c.choices[0]!.delta.content ?? '').join('');
    expect(text).toBe(expectedText);
    const finishes = withChoices.map((c) => c.choices[0]!.finish_reason).filter((f) => f != null);
    expect(finishes).toEqual(['stop']);
    expect(withChoices.at(-1)!.choices[0]!.finish_reason).toBe('stop');
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8, total_tokens: 15 });
  });

  it('streams a completion', async () => {
    const stream = await client.completions.create({ model: SIM_MODEL, prompt: 'one two', stream: true });
    let text = '';
    let n = 0;
    let finish: string | null = null;
    for await (const c of stream) {
      n++;
      text += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(n).toBe(8);
    expect(text).toBe('You said: one two tok0 tok1 tok2 tok3');
    expect(finish).toBe('stop');
  });

  it('sends the SSE headers and the request id on a stream', async () => {
    const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'stream-req-7' },
      body: JSON.stringify({ model: SIM_MODEL, messages, stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('x-request-id')).toBe('stream-req-7');
    const body = await res.text();
    expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
  });

  it('passes tools, response_format, seed, image parts and engine extras through to the engine', async () => {
    const params = {
      model: SIM_MODEL,
      messages: [
        {
          role: 'user' as const,
          content: [
            { type: 'text' as const, text: 'describe this picture' },
            {
              type: 'image_url' as const,
              image_url: {
                url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
              },
            },
          ],
        },
      ],
      tools: [
        {
          type: 'function' as const,
          function: {
            name: 'lookup',
            description: 'look up',
            parameters: { type: 'object', properties: { q: { type: 'string' } } },
          },
        },
      ],
      response_format: { type: 'json_object' as const },
      seed: 42,
      // vLLM-style extras the SDK does not know: the simulator honours sim_output_tokens,
      // so its effect proves extras reach the engine.
      sim_output_tokens: 5,
      top_k: 5,
      x_unknown_extra: { nested: [1, 2, 3] },
    };
    const r = await client.chat.completions.create(
      params as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
    );
    expect(r.choices[0]!.message.content).toBe('You said: describe this picture');
    expect(r.usage?.completion_tokens).toBe(5);
    // 3 words + 1 for the image part + 1 for the message: the image part arrived.
    expect(r.usage?.prompt_tokens).toBe(5);
  });

  it('answers model_not_found for an unknown model and 400 for a missing one', async () => {
    const err = await client.chat.completions.create({ model: 'no-such-model', messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const nf = err as InstanceType<typeof OpenAI.NotFoundError>;
    expect(nf.status).toBe(404);
    expect(nf.code).toBe('model_not_found');
    expect(nf.param).toBe('model');
    expect(nf.type).toBe('invalid_request_error');
    expect(nf.message).toContain('no-such-model');
    expect(nf.message).toContain('GET /v1/models');

    const emb = await client.embeddings.create({ model: 'no-such-model', input: 'x' }).catch((e: unknown) => e);
    expect(emb).toBeInstanceOf(OpenAI.NotFoundError);

    const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: {
        message: expect.stringContaining("'model'"),
        type: 'invalid_request_error',
        param: 'model',
        code: 'missing_required_parameter',
      },
    });
  });

  it("returns the engine's 400 in OpenAI's envelope", async () => {
    const err = await client.chat.completions
      .create({ model: SIM_MODEL, messages, max_tokens: -1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const br = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(br.status).toBe(400);
    expect(br.type).toBe('invalid_request_error');
    expect(br.message).toMatch(/max_tokens/);

    // A streaming request that the engine refuses gets JSON, not SSE.
    const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: SIM_MODEL, messages, max_tokens: -1, stream: true }),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { error: Record<string, unknown> };
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(body.error.type).toBe('invalid_request_error');
  });

  it("echoes the caller's x-request-id", async () => {
    const { response } = await client.chat.completions
      .create({ model: SIM_MODEL, messages }, { headers: { 'x-request-id': 'my-id-123' } })
      .withResponse();
    expect(response.headers.get('x-request-id')).toBe('my-id-123');
    const { response: r2 } = await client.embeddings.create({ model: SIM_MODEL, input: 'x' }).withResponse();
    expect(r2.headers.get('x-request-id')).toMatch(/^req_/);
  });

  it('serves concurrent requests', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        client.completions.create({ model: SIM_MODEL, prompt: `n${i}`, max_tokens: 3 }),
      ),
    );
    results.forEach((r, i) => expect(r.choices[0]!.text).toBe(`You said: n${i}`));
  });
});

describe('inference proxy (slow simulator)', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      worker: true,
      modelsYaml: defaultModelsYaml({ tokens_per_second: 20, output_tokens: 200 }),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('aborts the engine request when the client goes away mid-stream', async () => {
    // Warm the engine up so that its URL is known before the stream starts.
    await server.client.completions.create({ model: SIM_MODEL, prompt: 'warm', max_tokens: 1 });
    const urls = await engineUrls(server);
    expect(urls).toHaveLength(1);
    const engine = urls[0]!;
    const before = await simStats(engine);
    expect(before.running).toBe(0);

    const ac = new AbortController();
    const stream = await server.client.chat.completions.create(
      { model: SIM_MODEL, messages: [{ role: 'user', content: 'tell me a long story' }], stream: true },
      { signal: ac.signal },
    );
    let got = 0;
    const reading = (async () => {
      for await (const _c of stream) {
        if (++got === 2) ac.abort();
      }
    })().catch((e: unknown) => e);
    await reading; // the SDK ends the iteration (or throws) on abort
    expect(got).toBe(2);

    // 200 tokens at 20/s would take 10 s: the engine must learn of the abort at once.
    await expect
      .poll(
        async () => {
          const s = await simStats(engine);
          return { aborted: s.aborted - before.aborted >= 1, running: s.running };
        },
        { timeout: 5_000, interval: 100 },
      )
      .toEqual({ aborted: true, running: 0 });

    // The slot is free and the engine still serves.
    const r = await server.client.completions.create({ model: SIM_MODEL, prompt: 'after', max_tokens: 2 });
    expect(r.choices[0]!.text).toBe('You said:');
  });
});
