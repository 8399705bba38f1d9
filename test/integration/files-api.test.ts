import { createReadStream, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import OpenAI, { NotFoundError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { SIM_MODEL, startTestServer } from '../helpers/app.js';
import { chatLines, waitForBatch } from '../helpers/batch.js';
import { assertMatchesSchema } from '../helpers/openapi.js';
import { sweepFiles } from '../../src/control/file-janitor.js';

const MAX_UPLOAD = 4 * 1024 * 1024;
const MAX_BATCH = 1024 * 1024;

type Server = Awaited<ReturnType<typeof startTestServer>>;
let server: Server;
let client: OpenAI;
let scratch: string;

beforeAll(async () => {
  server = await startTestServer({
    env: { MAX_UPLOAD_BYTES: String(MAX_UPLOAD), MAX_BATCH_FILE_BYTES: String(MAX_BATCH), EXPIRY_SWEEP_MS: '100' },
  });
  client = new OpenAI({ baseURL: `${server.baseUrl}/v1`, apiKey: 'test', maxRetries: 0 });
  scratch = mkdtempSync(path.join(tmpdir(), 'bw-files-api-'));
});
afterAll(async () => {
  await server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const FILE_KEYS = [
  'id',
  'object',
  'bytes',
  'created_at',
  'expires_at',
  'filename',
  'purpose',
  'status',
  'status_details',
];
const storageRoot = () => server.app.deps.storage.root;
const storedIds = () =>
  readdirSync(storageRoot())
    .filter((n) => n !== 'tmp')
    .sort();
const tempFiles = () => readdirSync(path.join(storageRoot(), 'tmp'));

/** The spec types expires_at and status_details as non-null; like OpenAI we print null when unset. */
function assertFileObject(body: Record<string, unknown>): void {
  expect(Object.keys(body)).toEqual(FILE_KEYS);
  const { status_details: _s, ...rest } = body;
  assertMatchesSchema('OpenAIFile', rest.expires_at === null ? { ...rest, expires_at: undefined } : rest);
}

function writeTemp(name: string, data: Buffer | string): string {
  const p = path.join(scratch, name);
  writeFileSync(p, data);
  return p;
}

async function expectError(res: Response, status: number, code: string, param: string | null = null): Promise<string> {
  const body = (await res.json()) as { error: Record<string, unknown> };
  expect({ status: res.status, code: body.error?.code, param: body.error?.param }).toEqual({ status, code, param });
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.type).toBe(status >= 500 ? 'server_error' : 'invalid_request_error');
  assertMatchesSchema('ErrorResponse', body);
  return body.error.message as string;
}

interface RawPart {
  name: string;
  /** Sent verbatim inside the quotes of filename="…" (or as a full disposition suffix when it starts with ';'). */
  filename?: string;
  data: Buffer | string;
}

/** A multipart body built byte by byte, so tests control exactly what the parser sees. */
function multipart(parts: RawPart[]): { body: Buffer; headers: Record<string, string> } {
  const boundary = `----bwtest${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const fname =
      p.filename === undefined ? '' : p.filename.startsWith(';') ? p.filename : `; filename="${p.filename}"`;
    const ctype = p.filename === undefined ? '' : 'Content-Type: application/octet-stream\r\n';
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"${fname}\r\n${ctype}\r\n`,
        'latin1',
      ),
    );
    chunks.push(Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

const postRaw = (parts: RawPart[]) => {
  const { body, headers } = multipart(parts);
  return fetch(`${server.baseUrl}/v1/files`, { method: 'POST', body: new Uint8Array(body), headers });
};
const postForm = (form: FormData) => fetch(`${server.baseUrl}/v1/files`, { method: 'POST', body: form });
const jsonl = '{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{}}\n';

describe('Files API with the official SDK', () => {
  it('uploads a streamed file, retrieves it and returns the exact bytes', async () => {
    const bytes = Buffer.concat([
      Buffer.from('{"custom_id":"ü✓","x":"日本"}\r\n'),
      Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a]),
      randomBytes(4096),
    ]);
    const p = writeTemp('input.jsonl', bytes);
    const created = await client.files.create({ file: createReadStream(p), purpose: 'batch' });
    assertFileObject(created as unknown as Record<string, unknown>);
    expect(created).toMatchObject({
      object: 'file',
      bytes: bytes.length,
      filename: 'input.jsonl',
      purpose: 'batch',
      status: 'processed',
      status_details: null,
    });
    expect(created.id).toMatch(/^file-[A-Za-z0-9]+$/);
    expect(Math.abs(created.created_at - Date.now() / 1000)).toBeLessThan(60);
    expect(created.expires_at).toBe(created.created_at + 30 * 24 * 3600);

    expect(await client.files.retrieve(created.id)).toEqual(created);

    const res = await client.files.content(created.id);
    expect(res.headers.get('content-type')).toBe('application/jsonl');
    expect(res.headers.get('content-length')).toBe(String(bytes.length));
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
    expect(tempFiles()).toEqual([]);
  });

  it('serves non-jsonl files as application/octet-stream', async () => {
    const bytes = randomBytes(70_000);
    const f = await client.files.create({ file: createReadStream(writeTemp('blob.bin', bytes)), purpose: 'user_data' });
    expect(f.expires_at).toBeNull();
    assertFileObject(f as unknown as Record<string, unknown>);
    const res = await client.files.content(f.id);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('honours expires_after (bracket-encoded by the SDK)', async () => {
    const f = await client.files.create({
      file: createReadStream(writeTemp('exp.jsonl', jsonl)),
      purpose: 'user_data',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    expect(f.expires_at).toBe(f.created_at + 3600);
    const b = await client.files.create({
      file: createReadStream(writeTemp('exp2.jsonl', jsonl)),
      purpose: 'batch',
      expires_after: { anchor: 'created_at', seconds: 7200 },
    });
    expect(b.expires_at).toBe(b.created_at + 7200);
  });

  it('lists with limit/after pagination, both orders and a purpose filter', async () => {
    const made = [];
    for (let i = 0; i < 5; i++)
      made.push(
        await client.files.create({
          file: createReadStream(writeTemp(`e${i}.jsonl`, `{"i":${i}}\n`)),
          purpose: 'evals',
        }),
      );
    // Newest first; uploads within the same second keep their upload order.
    const desc = [...made].reverse().map((f) => f.id);

    const first = await client.files.list({ purpose: 'evals', limit: 2 });
    expect(first.data.map((f) => f.id)).toEqual(desc.slice(0, 2));
    expect(first.hasNextPage()).toBe(true);
    const all: string[] = [];
    for await (const f of client.files.list({ purpose: 'evals', limit: 2 })) all.push(f.id);
    expect(all).toEqual(desc);
    const asc: string[] = [];
    for await (const f of client.files.list({ purpose: 'evals', limit: 3, order: 'asc' })) asc.push(f.id);
    expect(asc).toEqual([...desc].reverse());

    const raw = await fetch(`${server.baseUrl}/v1/files?purpose=evals&limit=2&after=${desc[1]}`);
    const page = (await raw.json()) as Record<string, unknown>;
    expect(Object.keys(page)).toEqual(['object', 'data', 'first_id', 'last_id', 'has_more']);
    expect(page).toMatchObject({ object: 'list', first_id: desc[2], last_id: desc[3], has_more: true });
    assertMatchesSchema('ListFilesResponse', { ...page, data: [] });
    const last = (await (await fetch(`${server.baseUrl}/v1/files?purpose=evals&after=${desc[4]}`)).json()) as Record<
      string,
      unknown
    >;
    expect(last).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });

    const everything = await client.files.list();
    expect(everything.data.length).toBeGreaterThanOrEqual(5);
    expect(everything.data.every((f) => f.object === 'file')).toBe(true);
  });

  it('rejects bad list queries with 400', async () => {
    await expectError(await fetch(`${server.baseUrl}/v1/files?limit=0`), 400, 'invalid_request', 'limit');
    await expectError(await fetch(`${server.baseUrl}/v1/files?limit=10001`), 400, 'invalid_request', 'limit');
    await expectError(await fetch(`${server.baseUrl}/v1/files?order=sideways`), 400, 'invalid_request', 'order');
    await expectError(
      await fetch(`${server.baseUrl}/v1/files?after=file-doesnotexist`),
      400,
      'invalid_request',
      'after',
    );
  });

  it('takes concurrent uploads without mixing their bytes', async () => {
    const inputs = Array.from({ length: 6 }, (_, i) =>
      Buffer.concat([Buffer.from(`{"n":${i}}\n`), randomBytes(100_000 + i)]),
    );
    const made = await Promise.all(
      inputs.map((b, i) =>
        client.files.create({ file: createReadStream(writeTemp(`c${i}.jsonl`, b)), purpose: 'batch' }),
      ),
    );
    expect(new Set(made.map((f) => f.id)).size).toBe(inputs.length);
    for (const [i, f] of made.entries()) {
      expect(f.bytes).toBe(inputs[i]!.length);
      expect(Buffer.from(await (await client.files.content(f.id)).arrayBuffer()).equals(inputs[i]!)).toBe(true);
    }
  });

  it('deletes a file: 404 afterwards, bytes gone', async () => {
    const f = await client.files.create({ file: createReadStream(writeTemp('del.jsonl', jsonl)), purpose: 'batch' });
    expect(existsSync(server.app.deps.storage.pathOf(f.id))).toBe(true);
    const del = await client.files.delete(f.id);
    expect(del).toEqual({ id: f.id, object: 'file', deleted: true });
    assertMatchesSchema('DeleteFileResponse', del);
    expect(existsSync(server.app.deps.storage.pathOf(f.id))).toBe(false);

    const err = await client.files.retrieve(f.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as NotFoundError).code).toBe('file_not_found');
    await expect(client.files.content(f.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(client.files.delete(f.id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await client.files.list()).data.some((x) => x.id === f.id)).toBe(false);
  });

  it('keeps the bytes of a deleted input file until its batch ends, then the janitor removes them', async () => {
    const input = await client.files.create({
      file: createReadStream(writeTemp('active.jsonl', chatLines(3, SIM_MODEL))),
      purpose: 'batch',
    });
    const batch = await client.batches.create({
      input_file_id: input.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitForBatch(client, batch.id, ['in_progress']); // no worker: it stays there
    const bytesPath = server.app.deps.storage.pathOf(input.id);

    expect(await client.files.delete(input.id)).toEqual({ id: input.id, object: 'file', deleted: true });
    await expect(client.files.retrieve(input.id)).rejects.toBeInstanceOf(NotFoundError);
    // A janitor sweep, run to its end here rather than waited for on the timer: it keeps the bytes.
    const { files, storage, log } = server.app.deps;
    await sweepFiles({ files, storage, log }, Math.floor(Date.now() / 1000));
    expect(existsSync(bytesPath)).toBe(true);

    await client.batches.cancel(batch.id);
    await waitForBatch(client, batch.id, ['cancelled']);
    const deadline = Date.now() + 10_000;
    while (existsSync(bytesPath) && Date.now() < deadline) await sleep(50);
    expect(existsSync(bytesPath)).toBe(false);
  });
});

describe('Files API errors', () => {
  it('answers 404 file_not_found for unknown and malformed ids', async () => {
    // (Ids past Fastify's maxParamLength, 100, get Fastify's own 414 before any route runs.)
    for (const id of [
      'file-nope',
      'nope',
      '..%2F..%2Fetc%2Fpasswd',
      'file-..%2F..%2Fx',
      'file-a%00b',
      `file-${'a'.repeat(90)}`,
    ]) {
      for (const suffix of ['', '/content']) {
        const msg = await expectError(
          await fetch(`${server.baseUrl}/v1/files/${id}${suffix}`),
          404,
          'file_not_found',
          'id',
        );
        expect(msg).toContain('GET /v1/files');
      }
      await expectError(
        await fetch(`${server.baseUrl}/v1/files/${id}`, { method: 'DELETE' }),
        404,
        'file_not_found',
        'id',
      );
    }
  });

  it('refuses an upload without a file part', async () => {
    const form = new FormData();
    form.append('purpose', 'batch');
    await expectError(await postForm(form), 400, 'missing_required_parameter', 'file');
    await expectError(
      await postRaw([
        { name: 'purpose', data: 'batch' },
        { name: 'file', data: 'text, not a file part' },
      ]),
      400,
      'missing_required_parameter',
      'file',
    );
  });

  it('refuses two files and leaves nothing behind', async () => {
    const before = storedIds();
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob([jsonl]), 'a.jsonl');
    form.append('file', new Blob([jsonl]), 'b.jsonl');
    await expectError(await postForm(form), 400, 'invalid_multipart', 'file');
    expect(storedIds()).toEqual(before);
  });

  it('refuses missing, unknown and server-only purposes', async () => {
    const before = storedIds();
    await expectError(
      await postRaw([{ name: 'file', filename: 'a.jsonl', data: jsonl }]),
      400,
      'missing_required_parameter',
      'purpose',
    );
    for (const purpose of ['batch_output', 'nope', '']) {
      await expectError(
        await postRaw([
          { name: 'purpose', data: purpose },
          { name: 'file', filename: 'a.jsonl', data: jsonl },
        ]),
        400,
        'invalid_purpose',
        'purpose',
      );
      await expectError(
        await postRaw([
          { name: 'file', filename: 'a.jsonl', data: jsonl },
          { name: 'purpose', data: purpose },
        ]),
        400,
        'invalid_purpose',
        'purpose',
      );
    }
    expect(storedIds()).toEqual(before);
  });

  it('refuses bad expires_after values', async () => {
    const file = { name: 'file', filename: 'a.jsonl', data: jsonl };
    const purpose = { name: 'purpose', data: 'batch' };
    const anchor = (v: string) => ({ name: 'expires_after[anchor]', data: v });
    const seconds = (v: string) => ({ name: 'expires_after[seconds]', data: v });
    for (const s of ['3599', '2592001', '-5', '1.5', 'abc', '']) {
      await expectError(
        await postRaw([purpose, anchor('created_at'), seconds(s), file]),
        400,
        'invalid_request',
        'expires_after.seconds',
      );
    }
    await expectError(
      await postRaw([purpose, anchor('last_active_at'), seconds('3600'), file]),
      400,
      'invalid_request',
      'expires_after.anchor',
    );
    await expectError(
      await postRaw([purpose, seconds('3600'), file]),
      400,
      'missing_required_parameter',
      'expires_after.anchor',
    );
    await expectError(
      await postRaw([purpose, file, anchor('created_at')]),
      400,
      'missing_required_parameter',
      'expires_after.seconds',
    );
    const ok = await postRaw([file, purpose, anchor('created_at'), seconds('2592000')]);
    expect(ok.status).toBe(200);
  });

  it('refuses unknown fields and file parts under another name', async () => {
    const file = { name: 'file', filename: 'a.jsonl', data: jsonl };
    await expectError(
      await postRaw([{ name: 'purpose', data: 'batch' }, { name: 'colour', data: 'red' }, file]),
      400,
      'invalid_request',
      'colour',
    );
    await expectError(
      await postRaw([
        { name: 'purpose', data: 'batch' },
        { name: 'upload', filename: 'a.jsonl', data: jsonl },
      ]),
      400,
      'invalid_request',
      'upload',
    );
    await expectError(
      await postRaw([{ name: 'purpose', data: 'batch' }, { name: 'purpose', data: 'batch' }, file]),
      400,
      'invalid_request',
      'purpose',
    );
  });

  it('refuses non-multipart bodies with 415', async () => {
    const url = `${server.baseUrl}/v1/files`;
    await expectError(
      await fetch(url, {
        method: 'POST',
        body: '{"purpose":"batch"}',
        headers: { 'content-type': 'application/json' },
      }),
      415,
      'unsupported_media_type',
    );
    await expectError(
      await fetch(url, { method: 'POST', body: 'x', headers: { 'content-type': 'application/octet-stream' } }),
      415,
      'unsupported_media_type',
    );
    await expectError(await fetch(url, { method: 'POST' }), 415, 'unsupported_media_type');
    await expectError(
      await fetch(url, { method: 'POST', body: 'garbage', headers: { 'content-type': 'multipart/form-data' } }),
      400,
      'invalid_multipart',
    );
  });

  it('answers 413 past the limits, whatever the field order, and keeps nothing', async () => {
    const before = storedIds();
    const big = (n: number) => new Blob([Buffer.alloc(n, 0x61)]);
    const cases: [string, FormData, number][] = [];
    let f = new FormData();
    f.append('purpose', 'batch');
    f.append('file', big(MAX_BATCH + 1), 'big.jsonl');
    cases.push(['batch, purpose first', f, MAX_BATCH]);
    f = new FormData();
    f.append('file', big(MAX_BATCH + 1), 'big.jsonl');
    f.append('purpose', 'batch');
    cases.push(['batch, purpose last', f, MAX_BATCH]);
    f = new FormData();
    f.append('file', big(3 * MAX_UPLOAD), 'huge.bin');
    f.append('purpose', 'user_data');
    cases.push(['any purpose', f, MAX_UPLOAD]);
    for (const [label, form, limit] of cases) {
      const msg = await expectError(await postForm(form), 413, 'file_too_large', 'file');
      expect(msg, label).toContain(String(limit));
      expect(tempFiles(), label).toEqual([]);
      expect(storedIds(), label).toEqual(before);
    }
    // Exactly at the limit is fine, and the server still answers on the same connections.
    const okForm = new FormData();
    okForm.append('purpose', 'batch');
    okForm.append('file', big(MAX_BATCH), 'edge.jsonl');
    const ok = await postForm(okForm);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { bytes: number }).bytes).toBe(MAX_BATCH);
  });

  it('cleans up when the client disconnects mid-upload', async () => {
    const before = storedIds();
    const boundary = 'bwabort';
    const req = request(`${server.baseUrl}/v1/files`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    req.on('error', () => undefined);
    req.write(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n`);
    req.write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n`);
    req.write(Buffer.alloc(256 * 1024, 0x61));
    const deadline = Date.now() + 5000;
    while (tempFiles().length === 0 && Date.now() < deadline) await sleep(10);
    expect(tempFiles()).toHaveLength(1); // the upload is streaming to its temp file
    req.destroy();
    while (tempFiles().length > 0 && Date.now() < deadline) await sleep(10);
    expect(tempFiles()).toEqual([]);
    expect(storedIds()).toEqual(before);
    expect((await fetch(`${server.baseUrl}/v1/files?limit=1`)).status).toBe(200);
  });

  it('keeps client file names for display only and never writes outside the data dir', async () => {
    const names: [string, (stored: string) => void][] = [
      ['../../etc/passwd', (s) => expect(s).toBe('passwd')],
      ['/abs/path.jsonl', (s) => expect(s).toBe('path.jsonl')],
      ['..\\..\\win.jsonl', (s) => expect(s).not.toMatch(/[\\/]|^\.\.?$/)],
      ['a\u0000b\u0007c.jsonl', (s) => expect(s).toBe('abc.jsonl')],
      ['..', (s) => expect(s).toBe('file')],
      ["; filename*=UTF-8''..%2F..%2Fevil%E2%9C%93.jsonl", (s) => expect(s).toBe('evil✓.jsonl')],
      [`${'x'.repeat(400)}.jsonl`, (s) => expect(s.length).toBe(255)],
    ];
    const before = new Set(storedIds());
    for (const [name, check] of names) {
      const res = await postRaw([
        { name: 'purpose', data: 'user_data' },
        { name: 'file', filename: name, data: jsonl },
      ]);
      expect(res.status, name).toBe(200);
      const body = (await res.json()) as { id: string; filename: string };
      check(body.filename);
      // eslint-disable-next-line no-control-regex -- on purpose: no control character may survive in a file name
      expect(body.filename).not.toMatch(/[\u0000-\u001f]/);
      expect((await client.files.retrieve(body.id)).filename).toBe(body.filename);
    }
    const added = storedIds().filter((n) => !before.has(n));
    expect(added).toHaveLength(names.length);
    expect(added.every((n) => /^file-[A-Za-z0-9]+$/.test(n))).toBe(true);
    // Nothing named after a client file name anywhere in or next to the data dir.
    const everywhere = [
      ...readdirSync(server.dataDir, { recursive: true }).map(String),
      ...readdirSync(path.dirname(server.dataDir)).map(String),
    ];
    for (const bad of ['passwd', 'path.jsonl', 'win.jsonl', 'evil✓.jsonl'])
      expect(
        everywhere.some((n) => path.basename(n) === bad),
        bad,
      ).toBe(false);
  });
});
