import { RateLimitError, toFile } from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import { addKey, clientWith, type ErrorEnvelope } from '../helpers/auth.js';
import { chatLines } from '../helpers/batch.js';

const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});

async function get(server: TestServer, path: string, key?: string): Promise<Response> {
  return fetch(`${server.baseUrl}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
}

async function expect429(res: Response): Promise<ErrorEnvelope> {
  expect(res.status).toBe(429);
  const retryAfter = Number(res.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(60);
  const body = (await res.json()) as ErrorEnvelope;
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  return body;
}

describe('per-key request rate limit (RATE_LIMIT_PER_MIN)', () => {
  it('answers 429 rate_limit_exceeded with Retry-After past the limit: per client IP in open mode, then per key; never on probes', async () => {
    const server = await startTestServer({ env: { RATE_LIMIT_PER_MIN: '5' } });
    servers.push(server);

    // Open mode: one budget for this client address, whatever token it sends.
    for (let i = 0; i < 5; i++) expect((await get(server, '/v1/models', `tok-${i}`)).status).toBe(200);
    const open = await expect429(await get(server, '/v1/models', 'tok-other'));
    expect(open.error).toMatchObject({ code: 'rate_limit_exceeded', type: 'requests', param: null });
    expect(open.error.message).toContain('RATE_LIMIT_PER_MIN');

    // With keys: each key has its own budget.
    const ka = addKey(server, { project: 'A' });
    const kb = addKey(server, { project: 'B' });
    for (let i = 0; i < 5; i++) expect((await get(server, '/v1/models', ka)).status).toBe(200);
    const limited = await expect429(await get(server, '/v1/files', ka));
    expect(limited.error.code).toBe('rate_limit_exceeded');
    expect((await get(server, '/v1/models', kb)).status).toBe(200);

    // The SDK sees OpenAI's RateLimitError.
    const e = await clientWith(server, ka)
      .models.list()
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RateLimitError);
    expect((e as RateLimitError).code).toBe('rate_limit_exceeded');

    // Probes are never limited, with or without a key.
    for (let i = 0; i < 20; i++) {
      expect((await get(server, '/healthz')).status).toBe(200);
      expect((await get(server, '/readyz', ka)).status).toBe(200);
    }
  });
});

describe('active batches per project (MAX_ACTIVE_BATCHES)', () => {
  it('answers 429 too_many_active_batches with Retry-After once a project has the maximum running; other projects and retries are unaffected', async () => {
    // No worker: batches stay in progress, so they stay active.
    const server = await startTestServer({ env: { MAX_ACTIVE_BATCHES: '2', RATE_LIMIT_PER_MIN: '0' } });
    servers.push(server);
    const a = clientWith(server, addKey(server, { project: 'A' }));
    const b = clientWith(server, addKey(server, { project: 'B' }));
    const upload = async (c: typeof a) =>
      (await c.files.create({ file: await toFile(Buffer.from(chatLines(2, SIM_MODEL)), 'in.jsonl'), purpose: 'batch' }))
        .id;
    const create = async (c: typeof a, key?: string, fileId?: string) =>
      c.batches.create(
        { input_file_id: fileId ?? (await upload(c)), endpoint: '/v1/chat/completions', completion_window: '24h' },
        key ? { headers: { 'Idempotency-Key': key } } : undefined,
      );
    const firstFile = await upload(a);
    const first = await create(a, 'first', firstFile);
    await create(a);
    const e = await create(a).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RateLimitError);
    const err = e as RateLimitError;
    expect([err.status, err.code, err.type]).toEqual([429, 'too_many_active_batches', 'invalid_request_error']);
    expect(Number(err.headers?.get('retry-after'))).toBeGreaterThan(0);
    expect(err.message).toContain('MAX_ACTIVE_BATCHES');

    // A retry of a batch that exists is not a new batch.
    expect((await create(a, 'first', firstFile)).id).toBe(first.id);
    // Another project has its own allowance.
    await expect(create(b)).resolves.toMatchObject({ object: 'batch' });

    // With RATE_LIMIT_PER_MIN=0 there is no request limit (far more than 0 requests went through).
    for (let i = 0; i < 30; i++) expect((await a.models.list()).object).toBe('list');
  });
});
