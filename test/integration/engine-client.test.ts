import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { modelSchema } from '../../src/config/models.js';
import { toOpenAIErrorBody } from '../../src/domain/engine-error-body.js';
import { classifyFailure, EngineClient } from '../../src/engines/client.js';
import { buildEngineCommand } from '../../src/engines/commands.js';
import { EngineProcess } from '../../src/engines/engine-process.js';
import { allocatePort } from '../../src/engines/net.js';
import { createLogger } from '../../src/log/logger.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real simulator process and a client to it. */
async function simEngine(sim: Record<string, unknown> = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'engine-client-'));
  const model = modelSchema.parse({ id: 'm', engine: 'sim', sim });
  const port = await allocatePort();
  const proc = new EngineProcess({
    model: 'm',
    command: buildEngineCommand(model, port),
    port,
    logFile: path.join(dir, 'm.log'),
    log: createLogger('silent'),
    startupTimeoutMs: 20_000,
  });
  await proc.start();
  const client = new EngineClient(proc.baseUrl, { model: 'm', connections: 4, keepAliveTimeoutMs: 1_000 });
  cleanups.push(async () => {
    await client.destroy();
    await proc.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { proc, client };
}

const chat = { model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };

describe('EngineClient', () => {
  it('posts JSON (object, string or Buffer) and returns status, headers and body', async () => {
    const { client } = await simEngine();
    for (const body of [chat, JSON.stringify(chat), Buffer.from(JSON.stringify(chat))]) {
      const res = await client.post('/v1/chat/completions', body);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/json/);
      expect(JSON.parse(res.body.toString()).object).toBe('chat.completion');
    }
    const models = await client.get('/v1/models');
    expect(JSON.parse(models.body.toString()).data[0].id).toBe('m');
  });

  it("turns the engine's real 400 and 404 bodies into OpenAI's envelope", async () => {
    const { client } = await simEngine();
    const bad = await client.post('/v1/chat/completions', { ...chat, temperature: 5 });
    expect(bad.status).toBe(400);
    expect(classifyFailure(bad.status)).toBe('final');
    expect(toOpenAIErrorBody(bad.status, bad.body)).toEqual({
      error: { message: expect.stringMatching(/temperature/), type: 'invalid_request_error', param: null, code: null },
    });
    const missing = await client.post('/v1/chat/completions', { ...chat, model: 'other' });
    expect(toOpenAIErrorBody(missing.status, missing.body).error).toMatchObject({
      type: 'invalid_request_error',
      code: 'model_not_found',
    });
  });

  it('streams SSE for the caller to read', async () => {
    const { client } = await simEngine();
    const res = await client.stream('/v1/chat/completions', { ...chat, stream: true });
    expect(res.statusCode).toBe(200);
    const text = await res.body.text();
    expect(text).toMatch(/^data: /m);
    expect(text.trim().endsWith('data: [DONE]')).toBe(true);
  });

  it('fails a request past timeoutMs with a retryable ENGINE_REQUEST_FAILED', async () => {
    const { client } = await simEngine({ ttft_ms: 3_000 });
    const err = await client.post('/v1/chat/completions', chat, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENGINE_REQUEST_FAILED', model: 'm' });
    expect(classifyFailure(err)).toBe('retry');
  });

  it("passes the caller's abort through unwrapped, classified final", async () => {
    const { client } = await simEngine({ ttft_ms: 3_000 });
    const err = await client
      .post('/v1/chat/completions', chat, { signal: AbortSignal.timeout(1), timeoutMs: 10_000 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'TimeoutError' }); // the caller's own signal's reason
    const ac = new AbortController();
    const p = client.post('/v1/chat/completions', chat, { signal: ac.signal });
    ac.abort();
    const aborted = await p.catch((e: unknown) => e);
    expect(aborted).toMatchObject({ name: 'AbortError' });
    expect(classifyFailure(aborted)).toBe('final');
  });

  it('classifies a request to a stopped engine as retryable', async () => {
    const { proc, client } = await simEngine();
    await proc.stop();
    const err = await client.post('/v1/chat/completions', chat).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENGINE_REQUEST_FAILED' });
    expect(classifyFailure(err)).toBe('retry');
  });
});
