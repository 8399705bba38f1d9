/**
 * The inference proxy against hand-made upstreams (node:http) and a fake router: raw-byte
 * forwarding, error normalisation, the connection-failure retry, streaming with
 * backpressure and client aborts, and release accounting. The real router, worker and
 * simulator are covered by test/integration/inference.test.ts.
 */
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import { Pool } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiError, toOpenAIError } from '../../src/api/errors.js';
import type { EngineRouter, EngineTarget } from '../../src/api/proxy/router-types.js';
import inferenceRoutes from '../../src/api/routes/inference.js';

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

interface Upstream {
  baseUrl: string;
  seen: { path: string; headers: IncomingMessage['headers']; body: Buffer }[];
  closed: number;
  server: Server;
}

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function upstream(handler: Handler): Promise<Upstream> {
  const u: Upstream = { baseUrl: '', seen: [], closed: 0, server: undefined as unknown as Server };
  u.server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      u.seen.push({ path: req.url ?? '', headers: req.headers, body });
      res.on('close', () => {
        if (!res.writableFinished) u.closed++;
      });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => u.server.listen(0, '127.0.0.1', r));
  u.baseUrl = `http://127.0.0.1:${(u.server.address() as AddressInfo).port}`;
  cleanups.push(() => {
    u.server.closeAllConnections();
    return new Promise((r) => u.server.close(r));
  });
  return u;
}

/** A port nothing listens on. */
async function deadPort(): Promise<string> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

interface FakeRouter extends EngineRouter {
  acquired: number;
  released: number;
  failures: string[];
  signals: AbortSignal[];
}

/** Hands out the given base URLs in turn (the last one repeats). */
function fakeRouter(baseUrls: string[], opts: { acquire?: (signal: AbortSignal) => Promise<void> } = {}): FakeRouter {
  const pools = new Map<string, Pool>();
  let i = 0;
  const r: FakeRouter = {
    acquired: 0,
    released: 0,
    failures: [],
    signals: [],
    isKnownModel: (m) => m === 'm1',
    async acquire(model, signal) {
      r.signals.push(signal);
      await opts.acquire?.(signal);
      const baseUrl = baseUrls[Math.min(i++, baseUrls.length - 1)]!;
      let pool = pools.get(baseUrl);
      if (!pool) {
        pool = new Pool(baseUrl, { connections: 8 });
        pools.set(baseUrl, pool);
        cleanups.push(() => pool!.destroy());
      }
      r.acquired++;
      let done = false;
      const t: EngineTarget = {
        baseUrl,
        model,
        workerId: 'w1',
        dispatcher: pool,
        release() {
          if (done) throw new Error('released twice');
          done = true;
          r.released++;
        },
      };
      return t;
    },
    reportFailure(t) {
      r.failures.push(t.baseUrl);
    },
  };
  return r;
}

/** A minimal app with app.ts's request ids and ApiError rendering around the plugin. */
async function app(router: EngineRouter): Promise<{ app: FastifyInstance; url: string }> {
  const a = Fastify({
    bodyLimit: 32 * 1024 * 1024,
    genReqId: (req) =>
      typeof req.headers['x-request-id'] === 'string' ? req.headers['x-request-id'] : 'req_generated',
  });
  a.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  a.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return reply.status(err.status).send(toOpenAIError(err.message, err.type, err.param, err.code));
    }
    const status = err.statusCode ?? 500;
    return reply
      .status(status)
      .send(
        toOpenAIError(err.message, status >= 500 ? 'server_error' : 'invalid_request_error', null, err.code ?? null),
      );
  });
  await a.register(inferenceRoutes, { prefix: '/v1', router });
  const url = await a.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => a.close());
  return { app: a, url };
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : new Uint8Array(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const okJson = (_req: IncomingMessage, _body: Buffer, res: ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"id":"cmpl-1","object":"chat.completion","choices":[]}');
};

describe('inference proxy', () => {
  it('forwards the exact request bytes and the request id, and passes a 2xx body through', async () => {
    const up = await upstream(okJson);
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    // Spacing, key order, a number JSON.parse would round, unicode, an image part, extras.
    const raw =
      '{ "model":"m1",  "seed": 12345678901234567890, "messages":[{"role":"user","content":[{"type":"text","text":"héllo ✓"},' +
      '{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}],\n"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],' +
      '"response_format":{"type":"json_object"},"guided_regex":"a+","x_unknown":{"nested":[1,2.50,null]} }';
    const r = await post(`${url}/v1/chat/completions`, Buffer.from(raw, 'utf8'), { 'x-request-id': 'my-id-123' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.headers.get('x-request-id')).toBe('my-id-123');
    expect(r.json()).toEqual({ id: 'cmpl-1', object: 'chat.completion', choices: [] });
    expect(up.seen).toHaveLength(1);
    expect(up.seen[0]!.path).toBe('/v1/chat/completions');
    expect(up.seen[0]!.body.equals(Buffer.from(raw, 'utf8'))).toBe(true);
    expect(up.seen[0]!.headers['x-request-id']).toBe('my-id-123');
    expect(up.seen[0]!.headers['content-type']).toBe('application/json');
    expect([router.acquired, router.released]).toEqual([1, 1]);
  });

  it('routes each endpoint to the same engine path', async () => {
    const up = await upstream(okJson);
    const { url } = await app(fakeRouter([up.baseUrl]));
    for (const p of ['/chat/completions', '/completions', '/embeddings']) {
      expect((await post(`${url}/v1${p}`, '{"model":"m1"}')).status).toBe(200);
    }
    expect(up.seen.map((s) => s.path)).toEqual(['/v1/chat/completions', '/v1/completions', '/v1/embeddings']);
  });

  it('rejects a missing, mistyped or unknown model before acquiring an engine', async () => {
    const up = await upstream(okJson);
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    const missing = await post(`${url}/v1/chat/completions`, '{"messages":[]}');
    expect(missing.status).toBe(400);
    expect(missing.json()).toMatchObject({
      error: { code: 'missing_required_parameter', param: 'model', type: 'invalid_request_error' },
    });
    const typed = await post(`${url}/v1/completions`, '{"model":3}');
    expect(typed.status).toBe(400);
    expect(typed.json()).toMatchObject({ error: { code: 'invalid_request', param: 'model' } });
    const unknown = await post(`${url}/v1/embeddings`, '{"model":"nope","input":"x"}');
    expect(unknown.status).toBe(404);
    const err = (unknown.json() as { error: Record<string, unknown> }).error;
    expect(err).toMatchObject({ code: 'model_not_found', param: 'model', type: 'invalid_request_error' });
    expect(err.message).toContain("'nope'");
    expect(err.message).toContain('GET /v1/models');
    expect((await post(`${url}/v1/chat/completions`, '[1,2]')).status).toBe(400);
    expect((await post(`${url}/v1/chat/completions`, '{"model":')).status).toBe(400);
    expect(router.acquired).toBe(0);
    expect(up.seen).toHaveLength(0);
  });

  it("normalises an engine's error body into OpenAI's envelope, keeping the status", async () => {
    const up = await upstream((_req, _body, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(
        '{"object":"error","message":"max_tokens must be at least 1, got -1.","type":"BadRequestError","param":"max_tokens","code":400}',
      );
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    for (const stream of [false, true]) {
      const r = await post(`${url}/v1/chat/completions`, JSON.stringify({ model: 'm1', max_tokens: -1, stream }));
      expect(r.status).toBe(400);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(r.json()).toEqual({
        error: {
          message: 'max_tokens must be at least 1, got -1.',
          type: 'invalid_request_error',
          param: 'max_tokens',
          code: null,
        },
      });
    }
    expect([router.acquired, router.released]).toEqual([2, 2]);
  });

  it('retries once on another engine when the first refuses the connection', async () => {
    const dead = await deadPort();
    const up = await upstream(okJson);
    const router = fakeRouter([dead, up.baseUrl]);
    const { url } = await app(router);
    const r = await post(`${url}/v1/chat/completions`, '{"model":"m1"}');
    expect(r.status).toBe(200);
    expect(router.failures).toEqual([dead]);
    expect([router.acquired, router.released]).toEqual([2, 2]);
  });

  it('retries when the engine resets the connection before answering', async () => {
    let n = 0;
    const up = await upstream((req, _body, res) => {
      if (n++ === 0) return req.socket.destroy();
      okJson(req, _body, res);
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    const r = await post(`${url}/v1/completions`, '{"model":"m1","prompt":"hi"}');
    expect(r.status).toBe(200);
    expect(router.failures).toEqual([up.baseUrl]);
    expect(up.seen).toHaveLength(2);
  });

  it('answers 503 with Retry-After when the engine stops answering twice', async () => {
    const dead = await deadPort();
    const router = fakeRouter([dead]);
    const { url } = await app(router);
    for (const stream of [false, true]) {
      const r = await post(`${url}/v1/chat/completions`, JSON.stringify({ model: 'm1', stream }));
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe('5');
      const err = (r.json() as { error: Record<string, unknown> }).error;
      expect(err).toMatchObject({ code: 'service_unavailable', type: 'server_error', param: null });
      expect(err.message).toContain('m1');
      expect(err.message).toContain('stopped answering');
    }
    expect(router.failures).toHaveLength(4);
    expect([router.acquired, router.released]).toEqual([4, 4]);
  });

  it("passes the router's own 503 through", async () => {
    const router = fakeRouter(['http://127.0.0.1:9'], {
      acquire: async () => {
        throw new ApiError('service_unavailable', 'Model m1 did not become ready within 1 s. Retry later.', 'model', {
          'retry-after': '10',
        });
      },
    });
    const { url } = await app(router);
    const r = await post(`${url}/v1/chat/completions`, '{"model":"m1"}');
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('10');
    expect(r.json()).toMatchObject({ error: { code: 'service_unavailable', param: 'model' } });
  });

  it('streams SSE as it arrives, with the stream headers', async () => {
    let finish!: () => void;
    const up = await upstream((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
      res.write('data: {"n":1}\n\n');
      finish = () => res.end('data: {"n":2}\n\ndata: [DONE]\n\n');
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'stream-id-1' },
      body: '{"model":"m1","stream":true}',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('x-request-id')).toBe('stream-id-1');
    const reader = res.body!.getReader();
    const first = await reader.read();
    // The first event reached the client while the upstream is still open.
    expect(Buffer.from(first.value!).toString()).toBe('data: {"n":1}\n\n');
    expect(router.released).toBe(0);
    finish();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    expect(rest).toBe('data: {"n":2}\n\ndata: [DONE]\n\n');
    await expect.poll(() => router.released).toBe(1);
    expect(up.seen[0]!.headers['x-request-id']).toBe('stream-id-1');
  });

  it('aborts the upstream request and releases when the client disconnects mid-stream', async () => {
    const up = await upstream((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let i = 0;
      const t = setInterval(() => res.write(`data: {"i":${i++}}\n\n`), 10);
      res.on('close', () => clearInterval(t));
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    const ac = new AbortController();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model":"m1","stream":true}',
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    ac.abort();
    await expect.poll(() => up.closed).toBe(1);
    await expect.poll(() => router.released).toBe(1);
  });

  it('keeps backpressure: a client that does not read does not make the proxy buffer the stream', async () => {
    const chunk = 'data: ' + 'x'.repeat(64 * 1024) + '\n\n';
    let written = 0;
    let blocked = false;
    const up = await upstream((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const pump = () => {
        while (written < 2000) {
          written++;
          if (!res.write(chunk)) {
            blocked = true;
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    // A raw client that reads nothing.
    const req = httpRequest(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    });
    req.end('{"model":"m1","stream":true}');
    const res = await new Promise<IncomingMessage>((r) => req.once('response', r));
    res.pause();
    await expect.poll(() => blocked, { timeout: 10_000 }).toBe(true);
    // A negative check: once blocked, the upstream stays blocked. Without backpressure the proxy
    // would keep reading (loopback moves 400 × 64 KiB within milliseconds); late only makes this pass.
    await sleep(500);
    // 2000 × 64 KiB = 125 MiB would be written by now without backpressure.
    expect(written).toBeLessThan(400);
    res.destroy();
    await expect.poll(() => router.released).toBe(1);
  });

  it('aborts the wait for an engine when the client disconnects', async () => {
    const router = fakeRouter(['http://127.0.0.1:9'], {
      acquire: (signal) =>
        new Promise<void>((_resolve, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
    });
    const { url } = await app(router);
    const ac = new AbortController();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model":"m1"}',
      signal: ac.signal,
    }).catch((e: unknown) => e);
    await expect.poll(() => router.signals.length).toBe(1);
    ac.abort();
    await pending;
    await expect.poll(() => router.signals[0]!.aborted).toBe(true);
    expect(router.acquired).toBe(0);
  });

  it('ends a stream whose engine dies mid-way with an SSE error event', async () => {
    const up = await upstream((req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":1}\n\n', () => setTimeout(() => req.socket.destroy(), 20));
    });
    const router = fakeRouter([up.baseUrl]);
    const { url } = await app(router);
    const r = await post(`${url}/v1/chat/completions`, '{"model":"m1","stream":true}');
    expect(r.status).toBe(200);
    const events = r.text.split('\n\n').filter(Boolean);
    expect(events[0]).toBe('data: {"n":1}');
    const last = JSON.parse(events.at(-1)!.slice('data: '.length)) as { error: Record<string, unknown> };
    expect(last.error).toMatchObject({ type: 'server_error', code: 'service_unavailable' });
    await expect.poll(() => router.released).toBe(1);
  });
});
