import { readdirSync } from 'node:fs';
import { inspect } from 'node:util';
import OpenAI, { APIError, ConflictError, NotFoundError, toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import { addKey, clientWith } from '../helpers/auth.js';
import { chatLines, waitForBatch } from '../helpers/batch.js';

/**
 * Two projects (A with two keys, B) and an admin key, all through the official SDK: nothing of
 * A's is visible to B in any operation, and every refusal is the 404 an unknown id gets.
 */
let server: TestServer;
let a: OpenAI;
let a2: OpenAI;
let b: OpenAI;
let admin: OpenAI;
let openModeFileId: string;

const upload = async (
  c: OpenAI,
  text = chatLines(2, SIM_MODEL),
  opts: { purpose?: 'batch' | 'user_data'; key?: string; name?: string } = {},
) =>
  c.files.create(
    { file: await toFile(Buffer.from(text), opts.name ?? 'in.jsonl'), purpose: opts.purpose ?? 'batch' },
    opts.key ? { headers: { 'Idempotency-Key': opts.key } } : undefined,
  );
const newBatch = (c: OpenAI, fileId: string, key?: string) =>
  c.batches.create(
    { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' },
    key ? { headers: { 'Idempotency-Key': key } } : undefined,
  );

/** The error an operation fails with (or a failure if it succeeds). */
async function failure(p: Promise<unknown>): Promise<APIError> {
  const r = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(r instanceof APIError))
    throw new Error(`expected an API error, got ${r === undefined ? 'success' : inspect(r)}`);
  return r;
}

async function expect404(p: Promise<unknown>, code: 'file_not_found' | 'batch_not_found'): Promise<void> {
  const e = await failure(p);
  expect(e).toBeInstanceOf(NotFoundError);
  expect(e.status).toBe(404);
  expect(e.code).toBe(code);
  expect(e.type).toBe('invalid_request_error');
}

beforeAll(async () => {
  server = await startTestServer({ worker: true });
  // Uploaded before any key existed (open mode): it has no owner.
  openModeFileId = (await upload(server.client)).id;
  a = clientWith(server, addKey(server, { name: 'a', project: 'A' }));
  a2 = clientWith(server, addKey(server, { name: 'a2', project: 'A' }));
  b = clientWith(server, addKey(server, { name: 'b', project: 'B' }));
  admin = clientWith(server, addKey(server, { name: 'ops', project: 'ops', admin: true }));
});
afterAll(async () => {
  await server?.close();
});

describe('files belong to the uploading project', () => {
  it('another project gets 404 on retrieve, content and delete, and never sees them listed', async () => {
    const f = await upload(a);
    expect((await a2.files.retrieve(f.id)).id).toBe(f.id); // same project, other key
    await expect404(b.files.retrieve(f.id), 'file_not_found');
    await expect404(b.files.content(f.id), 'file_not_found');
    await expect404(b.files.delete(f.id), 'file_not_found');
    expect((await a.files.retrieve(f.id)).id).toBe(f.id); // B's delete did nothing

    const fb = await upload(b);
    const listedByB = (await b.files.list()).data.map((x) => x.id);
    expect(listedByB).toContain(fb.id);
    expect(listedByB).not.toContain(f.id);
    expect(listedByB).not.toContain(openModeFileId);
    const listedByA = (await a.files.list({ purpose: 'batch' })).data.map((x) => x.id);
    expect(listedByA).toContain(f.id);
    expect(listedByA).not.toContain(fb.id);
  });

  it("treats another project's id as an unknown `after` cursor", async () => {
    const f = await upload(a);
    const foreign = await failure(b.files.list({ after: f.id }));
    const unknown = await failure(b.files.list({ after: 'file-doesnotexist000' }));
    expect([foreign.status, foreign.code, foreign.param]).toEqual([unknown.status, unknown.code, unknown.param]);
    expect(foreign.status).toBe(400);
    expect((await a.files.list({ after: f.id })).data).toBeDefined();
  });

  it('lets admin keys see and list every project, and hides open-mode files from project keys', async () => {
    const fa = await upload(a);
    const fb = await upload(b);
    expect((await admin.files.retrieve(fa.id)).id).toBe(fa.id);
    expect((await admin.files.retrieve(fb.id)).id).toBe(fb.id);
    const all = (await admin.files.list({ limit: 10000 })).data.map((x) => x.id);
    expect(all).toEqual(expect.arrayContaining([fa.id, fb.id, openModeFileId]));
    await expect404(a.files.retrieve(openModeFileId), 'file_not_found');
    expect(await (await admin.files.content(fa.id)).text()).toBe(chatLines(2, SIM_MODEL));
  });
});

describe('batches belong to the creating project', () => {
  it("refuses another project's file as input_file_id with the 404 of an unknown file", async () => {
    const f = await upload(a);
    const e = await failure(newBatch(b, f.id));
    expect([e.status, e.code, e.param]).toEqual([404, 'file_not_found', 'input_file_id']);
    await expect404(newBatch(a, openModeFileId), 'file_not_found');
  });

  it('another project gets 404 on retrieve and cancel, and never sees them listed; output files stay in the project', async () => {
    const f = await upload(a);
    const batch = await newBatch(a, f.id);
    await expect404(b.batches.retrieve(batch.id), 'batch_not_found');
    await expect404(b.batches.cancel(batch.id), 'batch_not_found');
    expect((await b.batches.list()).data.map((x) => x.id)).not.toContain(batch.id);
    expect((await a2.batches.list()).data.map((x) => x.id)).toContain(batch.id);

    const done = await waitForBatch(a, batch.id, ['completed', 'failed', 'cancelled'], 120_000);
    expect(done.status).toBe('completed'); // B's cancel did nothing
    expect(done.output_file_id).toBeTruthy();
    const out = done.output_file_id!;
    expect((await (await a.files.content(out)).text()).split('\n').filter(Boolean)).toHaveLength(2);
    await expect404(b.files.content(out), 'file_not_found');
    await expect404(b.files.retrieve(out), 'file_not_found');
    expect((await b.files.list({ purpose: 'batch_output' })).data.map((x) => x.id)).not.toContain(out);
    expect((await a.files.list({ purpose: 'batch_output' })).data.map((x) => x.id)).toContain(out);
  });

  it("treats another project's batch id as an unknown `after` cursor", async () => {
    const batch = await newBatch(a, (await upload(a)).id);
    const foreign = await failure(b.batches.list({ after: batch.id }));
    const unknown = await failure(b.batches.list({ after: 'batch_doesnotexist000' }));
    expect([foreign.status, foreign.code, foreign.param]).toEqual([unknown.status, unknown.code, unknown.param]);
    expect(foreign.status).toBe(400);
  });

  it('lets admin keys retrieve, list and cancel any batch', async () => {
    const batch = await newBatch(b, (await upload(b, chatLines(200, SIM_MODEL))).id);
    expect((await admin.batches.retrieve(batch.id)).id).toBe(batch.id);
    expect((await admin.batches.list({ limit: 100 })).data.map((x) => x.id)).toContain(batch.id);
    const c = await admin.batches.cancel(batch.id).catch((e: unknown) => e);
    // It may have finished already on a fast machine; either way admin reached it.
    if (c instanceof APIError) expect(c.code).toBe('batch_not_cancellable');
    else expect(['cancelling', 'cancelled']).toContain((c as OpenAI.Batches.Batch).status);
  });
});

describe('Idempotency-Key is scoped to the project', () => {
  it('returns the same file for a retried upload, and stores it once', async () => {
    const text = chatLines(3, SIM_MODEL);
    const count = async () => (await admin.files.list({ limit: 10000, purpose: 'batch' })).data.length;
    const onDisk = () => new Set(readdirSync(server.app.deps.storage.root).filter((n) => n !== 'tmp'));
    const first = await upload(a, text, { key: 'upload-1' });
    const before = await count();
    const diskBefore = onDisk();
    const again = await upload(a, text, { key: 'upload-1' });
    expect(again).toEqual(first);
    expect(await count()).toBe(before);
    // The retry's bytes were dropped: anything new on disk is a known file (earlier tests'
    // batches may still be writing their output files), never an orphan without a row.
    // (A finalizing batch renames its file just before inserting its row: poll briefly.)
    const orphans = () =>
      [...onDisk()].filter((n) => !diskBefore.has(n) && server.app.deps.files.getAny(n) === undefined);
    await expect.poll(orphans, { timeout: 3000 }).toEqual([]);
    const fromOtherKeyOfA = await upload(a2, text, { key: 'upload-1' });
    expect(fromOtherKeyOfA.id).toBe(first.id);
    const sameKeyOtherProject = await upload(b, text, { key: 'upload-1' });
    expect(sameKeyOtherProject.id).not.toBe(first.id);
    expect(await count()).toBe(before + 1); // only B's
  });

  it('answers 409 idempotency_conflict when the key comes back with another file, name or purpose', async () => {
    const text = chatLines(2, SIM_MODEL);
    await upload(a, text, { key: 'upload-2' });
    for (const e of [
      await failure(upload(a, chatLines(4, SIM_MODEL), { key: 'upload-2' })),
      await failure(upload(a, text.replace('question', 'Question'), { key: 'upload-2' })), // same size, other bytes
      await failure(upload(a, text, { key: 'upload-2', name: 'other.jsonl' })),
      await failure(upload(a, text, { key: 'upload-2', purpose: 'user_data' })),
    ]) {
      expect(e).toBeInstanceOf(ConflictError);
      expect([e.status, e.code, e.param]).toEqual([409, 'idempotency_conflict', 'Idempotency-Key']);
    }
  });

  it('stores a second file for a retry without a key', async () => {
    const text = chatLines(2, SIM_MODEL);
    const x = await upload(a, text);
    const y = await upload(a, text);
    expect(y.id).not.toBe(x.id);
  });

  it('keeps batch Idempotency-Keys apart per project', async () => {
    const fa = await upload(a);
    const fb = await upload(b);
    const first = await newBatch(a, fa.id, 'batch-key-1');
    expect((await newBatch(a2, fa.id, 'batch-key-1')).id).toBe(first.id);
    const other = await newBatch(b, fb.id, 'batch-key-1');
    expect(other.id).not.toBe(first.id);
    await expect404(b.batches.retrieve(first.id), 'batch_not_found');
    const conflict = await failure(newBatch(a, (await upload(a)).id, 'batch-key-1'));
    expect([conflict.status, conflict.code]).toEqual([409, 'idempotency_conflict']);
  });
});
