import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultModelsYaml, startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { parseProm, pick, sseReader } from '../helpers/ops.js';
import { createKey } from '../../src/auth/keys-admin.js';

let server: TestServer | undefined;
let redis: Redis | undefined;
afterEach(async () => {
  await server?.close();
  redis?.disconnect();
  server = redis = undefined;
});
const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-in-'));
const getJson = async (s: TestServer, p: string) => await (await fetch(`${s.baseUrl}${p}`)).json();

/** Connections of this test's log streams (log-stream.ts names them `<prefix>-ops-log`). */
const logConnections = async (r: Redis, prefix: string) =>
  ((await r.client('LIST')) as string).split('\n').filter((l) => l.includes(` name=${prefix}-ops-log `)).length;

describe('operator API streams', () => {
  it('engine log SSE: recent lines first, then new ones as the engine restarts; closes its Redis connection when the client leaves', async () => {
    server = await startTestServer({ worker: true, modelsYaml: defaultModelsYaml({ crash_after: 3 }) });
    redis = new Redis(server.redisUrl);
    const { client } = server;
    await client.chat.completions.create({ model: SIM_MODEL, messages: [{ role: 'user', content: 'warm up' }] });
    const [engine] = (await getJson(server, '/ops/engines')).data;
    expect(engine.state).toBe('ready');

    const ac = new AbortController();
    const url = `${server.baseUrl}/ops/engines/${encodeURIComponent(engine.worker_id)}/${encodeURIComponent(SIM_MODEL)}/log?tail=200`;
    const res = await fetch(url, { headers: { authorization: 'Bearer unused-in-open-mode' }, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const sse = sseReader(res);
    // Recent: the start line the worker wrote to the log, and the simulator's ready line.
    const first = await sse.next(10_000);
    expect(first.event).toBe('line');
    expect(first.data).toEqual({ t: expect.any(Number), line: expect.stringMatching(/^--- .* starting /) });
    const ready = await sse.next(10_000, (e) => e.data.line.includes('"event":"ready"'));
    expect(ready.data.t).toBeGreaterThanOrEqual(first.data.t);
    for (const end = Date.now() + 5_000; (await logConnections(redis, server.prefix)) !== 1 && Date.now() < end;)
      await sleep(50);
    expect(await logConnections(redis, server.prefix)).toBe(1);

    // New lines: the engine crashes after 3 requests and is restarted; its second start arrives live.
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(10, SIM_MODEL))),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const restart = await sse.next(45_000, (e) => /^--- .* starting /.test(e.data.line));
    expect(restart.data.t).toBeGreaterThan(ready.data.t);
    await waitForBatch(client, b.id, ['completed'], 60_000);

    // The failure and the restart are in /ops/errors, /ops/engines and /metrics.
    const errors = (await getJson(server, '/ops/errors')).data as any[];
    expect(errors.some((e) => e.source === 'engine' && e.model === SIM_MODEL && /exited/.test(e.message))).toBe(true);
    expect(errors.some((e) => e.source === 'engine' && /restarted after a failure/.test(e.message))).toBe(true);
    expect((await getJson(server, '/ops/engines')).data[0].restarts).toBeGreaterThanOrEqual(1);
    const m = parseProm(await (await fetch(`${server.baseUrl}/metrics`)).text());
    expect(pick(m, 'batchwright_engine_restarts_total', { model: SIM_MODEL })[0]!.value).toBeGreaterThanOrEqual(1);
    const swaps = (await getJson(server, '/ops/swaps')).data as any[];
    expect(swaps.some((s) => s.reason === 'restart' && s.to === SIM_MODEL)).toBe(true);

    // The client leaves: the blocking connection goes with it.
    ac.abort();
    const deadline = Date.now() + 10_000;
    while ((await logConnections(redis, server.prefix)) > 0) {
      if (Date.now() > deadline) throw new Error('the log stream kept its Redis connection after the client left');
      await sleep(100);
    }
  });

  it('/ops/events: the active batches and engines at once, then a batches event when a batch appears and progresses', async () => {
    server = await startTestServer({
      worker: true,
      modelsYaml: defaultModelsYaml({ tokens_per_second: 40 }),
      env: { SSE_HEARTBEAT_MS: '1000' },
    });
    const ac = new AbortController();
    const res = await fetch(`${server.baseUrl}/ops/events`, {
      headers: { authorization: 'Bearer x' },
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    const sse = sseReader(res);
    expect(await sse.next(5_000, (e) => e.event === 'batches')).toEqual({ event: 'batches', data: [] });
    const engines = await sse.next(5_000, (e) => e.event === 'engines');
    expect(Array.isArray(engines.data)).toBe(true);
    expect(sse.state.comments).toBeGreaterThanOrEqual(1); // ': connected'

    const { client } = server;
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(40, SIM_MODEL))),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await sse.next(20_000, (e) => e.event === 'batches' && e.data.some((x: any) => x.id === b.id));
    // It leaves the active list when it completes.
    await sse.next(60_000, (e) => e.event === 'batches' && !e.data.some((x: any) => x.id === b.id));
    const withIt = sse.all.filter((e) => e.event === 'batches' && e.data.some((x: any) => x.id === b.id));
    expect(withIt[withIt.length - 1]!.data.find((x: any) => x.id === b.id)).toMatchObject({
      id: b.id,
      model: SIM_MODEL,
      request_counts: { total: expect.any(Number) },
    });
    // Sent on change only: no two consecutive batches events are equal.
    const batchEvents = sse.all.filter((e) => e.event === 'batches').map((e) => JSON.stringify(e.data));
    expect(batchEvents.every((d, i) => i === 0 || d !== batchEvents[i - 1])).toBe(true);
    const engineEvents = sse.all.filter((e) => e.event === 'engines');
    expect(engineEvents.some((e) => e.data.some((x: any) => x.model === SIM_MODEL && x.state === 'ready'))).toBe(true);
    expect((await client.batches.retrieve(b.id)).status).toBe('completed');
    // A heartbeat comment every SSE_HEARTBEAT_MS (15 s by default) keeps an idle stream open through proxies.
    const before = sse.state.comments;
    await sse.until(() => sse.state.comments > before, 20_000);
    // Closing the server ends the stream (close() would otherwise wait for it forever).
    await server.close();
    server = undefined;
    const drain = async () => {
      for (;;) await sse.next(5_000); // events still buffered, then the end
    };
    await expect(drain()).rejects.toThrow('the event stream ended');
    ac.abort();
  });
});

describe('/ops/events and short batches', () => {
  // A batch that lives less than the 1 s sampling tick (here: one that fails validation within
  // milliseconds) used to never appear in the stream; status changes now trigger a look at once.
  it('shows a batch whose whole life is shorter than a tick, and never sends the same list twice in a row', async () => {
    server = await startTestServer();
    const ac = new AbortController();
    const res = await fetch(`${server.baseUrl}/ops/events`, { signal: ac.signal });
    const sse = sseReader(res);
    expect(await sse.next(5_000, (e) => e.event === 'batches')).toEqual({ event: 'batches', data: [] });
    const { client } = server;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const file = await client.files.create({
        file: createReadStream(writeJsonl(tmp(), 'bad.jsonl', '{"custom_id": "a", "method": "POST"}\n')),
        purpose: 'batch',
      });
      const b = await client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      ids.push(b.id);
      await sse.next(10_000, (e) => e.event === 'batches' && e.data.some((x: any) => x.id === b.id));
      await sse.next(10_000, (e) => e.event === 'batches' && !e.data.some((x: any) => x.id === b.id));
      expect((await client.batches.retrieve(b.id)).status).toBe('failed');
    }
    const batchEvents = sse.all.filter((e) => e.event === 'batches').map((e) => JSON.stringify(e.data));
    expect(batchEvents.every((d, i) => i === 0 || d !== batchEvents[i - 1])).toBe(true);
    ac.abort();
  });
});

describe('operator routes with API keys', () => {
  it('need an admin key: 403 admin_required for a project key, 200 for an admin key; the probes stay open', async () => {
    server = await startTestServer();
    const user = createKey(server.app.deps.db, { name: 'user', project: 'p1' }).secret;
    const admin = createKey(server.app.deps.db, { name: 'ops', admin: true }).secret;
    const as = (key: string | null, p: string) =>
      fetch(`${server!.baseUrl}${p}`, key ? { headers: { authorization: `Bearer ${key}` } } : {});
    for (const p of [
      '/health',
      '/metrics',
      '/ops/batches',
      '/ops/workers',
      '/ops/engines',
      '/ops/gpus',
      '/ops/swaps',
      '/ops/errors',
      '/ops/events',
      `/ops/engines/w1/${SIM_MODEL}/log`,
    ]) {
      const refused = await as(user, p);
      expect(refused.status, p).toBe(403);
      expect((await refused.json()).error.code).toBe('admin_required');
      expect((await as(null, p)).status, p).toBe(401);
    }
    for (const p of ['/health', '/metrics', '/ops/batches', '/ops/workers'])
      expect((await as(admin, p)).status, p).toBe(200);
    const ac = new AbortController();
    const events = await fetch(`${server.baseUrl}/ops/events`, {
      headers: { authorization: `Bearer ${admin}` },
      signal: ac.signal,
    });
    expect(events.status).toBe(200);
    expect((await sseReader(events).next(5_000)).event).toBe('batches');
    ac.abort();
    expect((await as(null, '/healthz')).status).toBe(200);
    expect((await as(null, '/readyz')).status).toBe(200);
  });
});
