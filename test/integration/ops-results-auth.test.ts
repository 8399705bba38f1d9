import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch } from '../helpers/batch.js';
import { addKey, clientWith } from '../helpers/auth.js';

/** With API keys: a batch's results, stars and export belong to its project (and admins). */
let server: TestServer;
let admin: string;
let keyA: string;
let keyB: string;
let batchId: string;

const call = (key: string | null, p: string, method = 'GET', body?: unknown) =>
  fetch(`${server.baseUrl}${p}`, {
    method,
    headers: {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
const codeOf = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code;

beforeAll(async () => {
  server = await startTestServer({ worker: true });
  admin = addKey(server, { name: 'ops', admin: true });
  keyA = addKey(server, { name: 'a', project: 'team-a' });
  keyB = addKey(server, { name: 'b', project: 'team-b' });
  const a = clientWith(server, keyA);
  const file = await a.files.create({ file: new File([chatLines(3, SIM_MODEL)], 'in.jsonl'), purpose: 'batch' });
  const b = await a.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  batchId = b.id;
  expect((await waitForBatch(a, b.id, ['completed'], 120_000)).status).toBe('completed');
}, 180_000);
afterAll(async () => server?.close());

describe('results API with API keys', () => {
  it('shows a batch to its project and to admins, and 404s for other projects', async () => {
    expect((await call(keyA, `/ops/batches/${batchId}/results`)).status).toBe(200);
    expect((await call(admin, `/ops/batches/${batchId}/results`)).status).toBe(200);
    const other = await call(keyB, `/ops/batches/${batchId}/results`);
    expect(other.status).toBe(404);
    expect(await codeOf(other)).toBe('batch_not_found');
    expect((await call(null, `/ops/batches/${batchId}/results`)).status).toBe(401);
    expect((await call(keyB, `/ops/compare?batch_ids=${batchId},${batchId.slice(0, -1)}x`)).status).toBe(404);
  });

  it('keeps stars and the export to the batch owner', async () => {
    expect((await call(keyB, `/ops/batches/${batchId}/stars/req-1`, 'PUT')).status).toBe(404);
    expect((await call(keyA, `/ops/batches/${batchId}/stars/req-1`, 'PUT')).status).toBe(200);
    const mine = await call(keyA, '/ops/stars/export');
    expect((await mine.text()).trim().split('\n')).toHaveLength(1);
    const theirs = await call(keyB, '/ops/stars/export');
    expect(theirs.status).toBe(200);
    expect(await theirs.text()).toBe('');
    expect((await call(keyB, `/ops/stars/export?batch_ids=${batchId}`)).status).toBe(404);
    const all = await call(admin, `/ops/stars/export?batch_ids=${batchId}`);
    expect(JSON.parse((await all.text()).trim()).messages.at(-1).role).toBe('assistant');
  });

  it('records and lists benchmark runs with an admin key only', async () => {
    const run = { model: SIM_MODEL, kind: 'batch', requests_per_s: 10 };
    const denied = await call(keyA, '/ops/benchmarks', 'POST', run);
    expect(denied.status).toBe(403);
    expect(await codeOf(denied)).toBe('admin_required');
    expect((await call(keyA, '/ops/benchmarks')).status).toBe(403);
    expect((await call(admin, '/ops/benchmarks', 'POST', run)).status).toBe(200);
    const list = (await (await call(admin, '/ops/benchmarks')).json()) as { data: unknown[] };
    expect(list.data).toHaveLength(1);
  });

  it('serves the dashboard page without a key (it holds no data; its API calls need one)', async () => {
    const page = await call(null, '/dashboard/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect((await call(null, '/dashboard/app.js')).status).toBe(200);
    expect((await call(null, '/ops/batches')).status).toBe(401);
  });
});
