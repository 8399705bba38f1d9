/**
 * Property-based fuzzing of every route's parameters through app.inject against the real
 * control plane (real SQLite, real Redis, no worker): hostile query strings, path parameters,
 * JSON bodies and headers never crash the server, never get a 5xx, and every error is
 * OpenAI's envelope {"error":{"message","type","param","code"}}.
 *
 * Inference routes are fuzzed with models the registry does not have, so no engine is needed:
 * the answer must be a 4xx, never the 503 of a wait for an engine.
 */
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import {
  fuzzRuns,
  hostileBodyText,
  hostileHeaders,
  hostileJson,
  hostilePathParam,
  hostileQuery,
  nastyString,
  objectOf,
  PROTO_KEYS,
} from '../helpers/arbitraries.js';

let server: TestServer;
let counted = 0;
let fileId: string;

beforeAll(async () => {
  server = await startTestServer({
    env: { MAX_UPLOAD_BYTES: String(256 * 1024), MAX_BATCH_FILE_BYTES: String(128 * 1024), RATE_LIMIT_PER_MIN: '0' },
  });
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append(
    'file',
    new Blob(['{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"sim-model"}}\n']),
    'in.jsonl',
  );
  const res = await fetch(`${server.baseUrl}/v1/files`, { method: 'POST', body: form });
  fileId = ((await res.json()) as { id: string }).id;
});
afterAll(async () => {
  await server?.close();
  // Reported so a CI log shows how much fuzzing ran.
  console.info(`hostile-endpoints: ${counted} requests`);
});

type Method = 'GET' | 'POST' | 'DELETE' | 'PUT' | 'PATCH' | 'HEAD' | 'OPTIONS';

/** The response is a non-5xx and, when an error, exactly OpenAI's envelope. */
function assertSane(res: LightMyRequestResponse, what: string): void {
  counted += 1;
  const ctx = `${what} → ${res.statusCode} ${res.body.slice(0, 300)}`;
  expect(res.statusCode, ctx).toBeLessThan(500);
  expect(res.headers['x-request-id'], ctx).toBeTruthy();
  if (res.statusCode < 400) return;
  const body = JSON.parse(res.body) as { error: Record<string, unknown> };
  expect(Object.keys(body), ctx).toEqual(['error']);
  expect(Object.keys(body.error).sort(), ctx).toEqual(['code', 'message', 'param', 'type']);
  const { message, type, param, code } = body.error;
  expect(typeof message === 'string' && message.length > 10, ctx).toBe(true);
  expect(type, ctx).toBe('invalid_request_error');
  expect(param === null || typeof param === 'string', ctx).toBe(true);
  expect(typeof code === 'string' && /^[a-z_]+$/.test(code), ctx).toBe(true);
  // Errors that echo input stay short: nobody needs a 30 MB message back.
  expect((message as string).length, ctx).toBeLessThan(2000);
}

async function hit(
  method: Method,
  url: string,
  opts: { body?: string; headers?: Record<string, string> } = {},
): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type'))
    headers['content-type'] = 'application/json';
  const res = await server.app.inject({ method, url, payload: opts.body, headers });
  assertSane(
    res,
    `${method} ${url.slice(0, 200)} ${opts.body?.slice(0, 200) ?? ''} ${JSON.stringify(headers).slice(0, 200)}`,
  );
  return res;
}

/** A hostile body, never naming a model the registry has (that would wait for an engine). */
const inferenceBody = fc
  .oneof(
    hostileBodyText,
    fc
      .tuple(
        fc.oneof(nastyString, hostileJson),
        fc.dictionary(
          fc.oneof(fc.constantFrom(...PROTO_KEYS, 'stream', 'messages', 'input', 'prompt'), nastyString),
          hostileJson,
          { maxKeys: 4 },
        ),
      )
      .map(([model, rest]) => JSON.stringify(objectOf([...Object.entries(rest), ['model', model]]))),
  )
  .filter((t) => !t.includes(SIM_MODEL));

const batchBody = fc
  .record(
    {
      input_file_id: fc.oneof(nastyString, hostileJson, fc.constant('file-doesnotexist')),
      endpoint: fc.oneof(
        fc.constantFrom('/v1/chat/completions', '/v1/embeddings', '/v1/completions', '/v1/responses'),
        nastyString,
      ),
      completion_window: fc.oneof(fc.constant('24h'), nastyString, hostileJson),
      metadata: fc.oneof(hostileJson, fc.dictionary(nastyString, nastyString, { maxKeys: 20 })),
      output_expires_after: fc.oneof(
        hostileJson,
        fc.record({
          anchor: fc.oneof(fc.constant('created_at'), nastyString),
          seconds: fc.oneof(fc.integer(), hostileJson),
        }),
      ),
      extra: hostileJson,
    },
    { requiredKeys: [] },
  )
  .chain((b) =>
    fc
      .constantFrom(...PROTO_KEYS, 'extra')
      .map((k) => objectOf(Object.entries(b).map(([key, v]) => [key === 'extra' ? k : key, v]))),
  )
  .map((b) => JSON.stringify(b));

describe('every route under hostile parameters', () => {
  it('GET /v1/files with hostile query strings', async () => {
    await fc.assert(
      fc.asyncProperty(
        hostileQuery,
        hostileHeaders,
        async (q, h) => void (await hit('GET', `/v1/files?${q}`, { headers: h })),
      ),
      { numRuns: fuzzRuns(600) },
    );
  });

  it('GET /v1/batches with hostile query strings', async () => {
    await fc.assert(
      fc.asyncProperty(
        hostileQuery,
        hostileHeaders,
        async (q, h) => void (await hit('GET', `/v1/batches?${q}`, { headers: h })),
      ),
      { numRuns: fuzzRuns(600) },
    );
  });

  it('file routes with hostile path parameters', async () => {
    const routes: [Method, (p: string) => string][] = [
      ['GET', (p) => `/v1/files/${p}`],
      ['GET', (p) => `/v1/files/${p}/content`],
      ['DELETE', (p) => `/v1/files/${p}`],
    ];
    await fc.assert(
      fc.asyncProperty(hostilePathParam, fc.constantFrom(...routes), hostileQuery, async (p, [m, url], q) => {
        const res = await hit(m, `${url(p)}?${q}`);
        expect(res.statusCode).not.toBe(200);
      }),
      { numRuns: fuzzRuns(600) },
    );
  });

  it('batch routes with hostile path parameters and bodies', async () => {
    await fc.assert(
      fc.asyncProperty(hostilePathParam, fc.boolean(), hostileBodyText, async (p, cancel, body) => {
        const res = cancel
          ? await hit('POST', `/v1/batches/${p}/cancel`, { body })
          : await hit('GET', `/v1/batches/${p}`);
        expect(res.statusCode).not.toBe(200);
      }),
      { numRuns: fuzzRuns(600) },
    );
  });

  it('model routes with hostile ids (which may contain slashes)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(hostilePathParam, { minLength: 1, maxLength: 3 }), async (segs) => {
        const res = await hit('GET', `/v1/models/${segs.join('/')}`);
        expect([400, 404]).toContain(res.statusCode);
      }),
      { numRuns: fuzzRuns(400) },
    );
    const list = await hit('GET', '/v1/models?limit=__proto__&after[]=1');
    expect(list.statusCode).toBe(200);
  });

  it('POST /v1/batches with hostile bodies and headers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(batchBody, hostileBodyText), hostileHeaders, async (body, h) => {
        const res = await hit('POST', '/v1/batches', { body, headers: h });
        // Never a batch from garbage: every generated body lacks a valid input file.
        expect(res.statusCode).toBeGreaterThanOrEqual(400);
      }),
      { numRuns: fuzzRuns(1200) },
    );
  });

  it('POST /v1/batches with an existing file but hostile other fields', async () => {
    await fc.assert(
      fc.asyncProperty(batchBody, async (body) => {
        const b = { ...JSON.parse(body), input_file_id: fileId };
        await hit('POST', '/v1/batches', { body: JSON.stringify(b) });
      }),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('inference routes with hostile bodies, headers and unknown models', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/v1/chat/completions', '/v1/completions', '/v1/embeddings'),
        inferenceBody,
        hostileHeaders,
        async (url, body, h) => {
          const res = await hit('POST', url, { body, headers: h });
          expect(res.statusCode).toBeGreaterThanOrEqual(400);
        },
      ),
      { numRuns: fuzzRuns(1500) },
    );
  });

  it('JSON routes with hostile content types', async () => {
    const ct = fc.oneof(
      fc.constantFrom(
        'text/plain',
        'application/json; charset=utf-16',
        'application/json; charset=latin1',
        'application/x-www-form-urlencoded',
        'multipart/form-data',
        'multipart/form-data; boundary=x',
        'application/jsonl',
        '*/*',
        ';',
        'application/json;;;',
        'application/json, text/plain',
      ),
      fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(
          '/v1/batches',
          '/v1/chat/completions',
          '/v1/embeddings',
          '/v1/files',
          '/v1/batches/batch_x/cancel',
        ),
        ct,
        hostileBodyText,
        async (url, type, body) => {
          await hit('POST', url, { body: body.replaceAll(SIM_MODEL, 'x'), headers: { 'content-type': type } });
        },
      ),
      { numRuns: fuzzRuns(600) },
    );
  });

  it('unknown routes and methods', async () => {
    const methods: Method[] = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...methods),
        fc.array(hostilePathParam, { maxLength: 3 }),
        fc.constantFrom('/', '/v1/', '/v1/files/', '/v1/batches/', '/healthz/'),
        async (m, segs, base) => {
          const url = `${base}${segs.join('/')}`;
          await hit(m, url, m === 'GET' || m === 'DELETE' || m === 'OPTIONS' ? {} : { body: '{}' });
        },
      ),
      { numRuns: fuzzRuns(400) },
    );
  });
});

describe('regressions found by the fuzzer', () => {
  it('deeply nested JSON bodies (100k levels) answer 400, on every JSON route', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const deepObj = '{"model":'.repeat(100_000) + '1' + '}'.repeat(100_000);
    for (const url of [
      '/v1/batches',
      '/v1/chat/completions',
      '/v1/completions',
      '/v1/embeddings',
      '/v1/batches/batch_x/cancel',
    ]) {
      for (const body of [
        deep,
        deepObj,
        `{"model":"nope","messages":${deep}}`,
        `{"input_file_id":"x","metadata":${deepObj}}`,
      ]) {
        const res = await hit('POST', url, { body });
        expect(res.statusCode).toBeGreaterThanOrEqual(400);
      }
    }
  });

  it('prototype-pollution keys are refused or ignored, and pollute nothing', async () => {
    for (const body of [
      '{"__proto__":{"polluted":1},"model":"nope"}',
      '{"constructor":{"prototype":{"polluted":1}},"model":"nope"}',
      '{"input_file_id":"x","__proto__":{"admin":true}}',
    ]) {
      for (const url of ['/v1/batches', '/v1/chat/completions']) await hit('POST', url, { body });
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it('echoes at most a short prefix of a huge model name or id', async () => {
    const huge = 'm'.repeat(5_000_000);
    const r1 = await hit('POST', '/v1/chat/completions', { body: JSON.stringify({ model: huge, messages: [] }) });
    expect(r1.statusCode).toBe(404);
    const r2 = await hit('POST', '/v1/batches', {
      body: JSON.stringify({ input_file_id: huge, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    });
    expect(r2.statusCode).toBe(400);
    const r3 = await hit('GET', `/v1/models/${'q'.repeat(100_000)}`);
    expect(r3.statusCode).toBe(404);
  });

  it('errors raised before routing carry x-request-id, and echo at most 300 characters of the URL', async () => {
    for (const url of ['/%', '/v1/files/%zz', `/v1/batches/${'y'.repeat(600)}`, `/v1/files/a/${'z'.repeat(100_000)}`]) {
      const res = await hit('GET', url);
      expect(res.statusCode).toBeGreaterThanOrEqual(400);
      expect(JSON.parse(res.body).error.message.length).toBeLessThan(400);
    }
  });

  it('a 100 KB metadata key is refused with a short param and message', async () => {
    const key = 'k'.repeat(100_000);
    const res = await hit('POST', '/v1/batches', {
      body: JSON.stringify({
        input_file_id: fileId,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { [key]: 'v' },
      }),
    });
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body).error.param.length).toBeLessThan(200);
  });

  it('invalid UTF-8 in a JSON body is a clear 400', async () => {
    for (const url of ['/v1/batches', '/v1/chat/completions', '/v1/embeddings']) {
      const res = await server.app.inject({
        method: 'POST',
        url,
        payload: Buffer.from([0x7b, 0x22, 0x6d, 0x6f, 0x64, 0x65, 0x6c, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
        headers: { 'content-type': 'application/json' },
      });
      assertSane(res, `invalid utf-8 to ${url}`);
      expect(res.statusCode).toBe(400);
      expect(JSON.parse(res.body).error.message).toMatch(/UTF-8/);
    }
  });
});
