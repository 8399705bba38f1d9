/**
 * Hostile uploads against the real control plane over real sockets: oversized bodies refused
 * while streaming (the disk never holds more than the limit), multipart tricks, path-traversal
 * and header-injection file names, stalled uploads cut off by the idle timeout, and batch files
 * with invalid UTF-8, very long lines and 100k-level nesting.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import { deepJson, fuzzRuns } from '../helpers/arbitraries.js';

const MAX_UPLOAD = 1024 * 1024;
const MAX_BATCH = 512 * 1024;
const IDLE_MS = 1500;

let small: TestServer;
let big: TestServer;
beforeAll(async () => {
  [small, big] = await Promise.all([
    startTestServer({
      env: {
        MAX_UPLOAD_BYTES: String(MAX_UPLOAD),
        MAX_BATCH_FILE_BYTES: String(MAX_BATCH),
        UPLOAD_IDLE_TIMEOUT_MS: String(IDLE_MS),
        RATE_LIMIT_PER_MIN: '0',
      },
    }),
    startTestServer({
      env: { MAX_UPLOAD_BYTES: String(64 << 20), MAX_BATCH_FILE_BYTES: String(48 << 20), RATE_LIMIT_PER_MIN: '0' },
    }),
  ]);
});
afterAll(async () => {
  await Promise.all([small?.close(), big?.close()]);
});

const FILE_ID = /^file-[A-Za-z0-9]+$/;
const tmpDir = (s: TestServer) => path.join(s.app.deps.storage.root, 'tmp');
function tmpBytes(s: TestServer): number {
  try {
    return readdirSync(tmpDir(s)).reduce(
      (n, f) => n + (statSync(path.join(tmpDir(s), f), { throwIfNoEntry: false })?.size ?? 0),
      0,
    );
  } catch {
    return 0; // a temp file renamed or removed between readdir and stat
  }
}
const storedIds = (s: TestServer) => readdirSync(s.app.deps.storage.root).filter((n) => n !== 'tmp');

interface Part {
  headers: string[];
  body: Buffer | string;
}
const fieldPart = (name: string, value: string): Part => ({
  headers: [`Content-Disposition: form-data; name="${name}"`],
  body: value,
});
const filePart = (body: Buffer | string, filename = 'in.jsonl', name = 'file'): Part => ({
  headers: [
    `Content-Disposition: form-data; name="${name}"; filename="${filename}"`,
    'Content-Type: application/octet-stream',
  ],
  body,
});

function multipartBody(boundary: string, parts: Part[], close = true): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts)
    chunks.push(
      Buffer.from(`--${boundary}\r\n${p.headers.join('\r\n')}\r\n\r\n`),
      Buffer.from(p.body),
      Buffer.from('\r\n'),
    );
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

/**
 * POSTs raw bytes over a real socket. (Not app.inject: light-my-request's request stream never
 * lets busboy see the end of a body cut inside a file part, so such a request would hang there,
 * while a real socket gets "Part terminated early" as it should.)
 */
async function inject(s: TestServer, payload: Buffer, contentType: string | undefined) {
  const res = await fetch(`${s.baseUrl}/v1/files`, {
    method: 'POST',
    body: new Uint8Array(payload),
    headers: contentType ? { 'content-type': contentType } : {},
  });
  const body = JSON.parse(await res.text()) as {
    error?: { message: string; type: string; param: string | null; code: string };
    id?: string;
    filename?: string;
  };
  return { status: res.status, body, headers: res.headers };
}

function expectEnvelope(
  r: { status: number; body: { error?: Record<string, unknown> } },
  status: number,
  code: string,
): string {
  expect({ status: r.status, code: r.body.error?.code }).toEqual({ status, code });
  expect(Object.keys(r.body.error!).sort()).toEqual(['code', 'message', 'param', 'type']);
  const message = r.body.error!.message as string;
  // Says what to do, not only what went wrong.
  expect(message).toMatch(/\b(Send|Upload|upload|Use|Split|retry|Retry|Check|accepts|Give)\b/);
  return message;
}

describe('oversized uploads', () => {
  /**
   * Streams `total` bytes of file data in 64 KiB writes with backpressure, sampling the temp
   * folder as it goes; stops writing once the response has arrived (as a real client would).
   */
  async function streamUpload(purposeFirst: boolean, total: number) {
    const boundary = 'bwbig';
    const req = request(`${small.baseUrl}/v1/files`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    let sent = 0;
    let sentAtResponse = -1;
    let maxTmp = 0;
    let errored: Error | undefined;
    req.on('error', (e) => (errored = e));
    const response = new Promise<{ status: number; body: string }>((resolve) => {
      req.on('response', (res: IncomingMessage) => {
        sentAtResponse = sent;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
    const sampler = setInterval(() => (maxTmp = Math.max(maxTmp, tmpBytes(small))), 2);
    // Resolves on drain, or when the server closed the connection (it does, after refusing).
    const write = (b: Buffer | string) =>
      new Promise<void>((r) => {
        if (req.destroyed || req.write(b)) return r();
        const done = () => {
          req.off('drain', done);
          req.off('close', done);
          r();
        };
        req.on('drain', done);
        req.on('close', done);
      });
    if (purposeFirst) await write(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n`);
    await write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    while (sent < total && sentAtResponse < 0 && !errored && !req.destroyed) {
      await write(chunk);
      sent += chunk.length;
      maxTmp = Math.max(maxTmp, tmpBytes(small));
    }
    const res = await Promise.race([response, sleep(15_000).then(() => ({ status: -1, body: '' }))]);
    clearInterval(sampler);
    req.destroy();
    return { ...res, sent, sentAtResponse, maxTmp };
  }

  for (const purposeFirst of [true, false]) {
    it(`answers 413 before a 64 MiB body is sent, and never holds more than the limit on disk (purpose ${purposeFirst ? 'before' : 'after'} the file)`, async () => {
      const before = storedIds(small);
      const total = 64 * 1024 * 1024;
      const r = await streamUpload(purposeFirst, total);
      expect(r.status).toBe(413);
      const body = JSON.parse(r.body) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('file_too_large');
      expect(body.error.message).toMatch(purposeFirst ? /MAX_BATCH_FILE_BYTES/ : /MAX_UPLOAD_BYTES/);
      // The server answered while the client was still sending: the body was not read to the end.
      // (How much more the client wrote before it saw the answer depends on the machine's load:
      // ~5 MB on a quiet one, 18 MB under load; the disk bound below is the one that matters.)
      expect(r.sentAtResponse).toBeGreaterThan(0);
      expect(r.sentAtResponse).toBeLessThan(total);
      const limit = purposeFirst ? MAX_BATCH : MAX_UPLOAD;
      expect(r.maxTmp).toBeLessThanOrEqual(limit + 1);
      // Nothing kept: no temp file, no stored file.
      const deadline = Date.now() + 5000;
      while (readdirSync(tmpDir(small)).length > 0 && Date.now() < deadline) await sleep(10);
      expect(readdirSync(tmpDir(small))).toEqual([]);
      expect(storedIds(small)).toEqual(before);
    });
  }
});

describe('multipart tricks', () => {
  const jsonl = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"sim-model"}}\n';
  const B = 'bwtrick';
  const ct = `multipart/form-data; boundary=${B}`;
  const cases: [string, Buffer, string | undefined, number, string, RegExp][] = [
    [
      'missing file part',
      multipartBody(B, [fieldPart('purpose', 'batch')]),
      ct,
      400,
      'missing_required_parameter',
      /Missing the "file" part/,
    ],
    [
      'two file parts',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl), filePart(jsonl, 'b.jsonl')]),
      ct,
      400,
      'invalid_multipart',
      /more than one file/,
    ],
    [
      'unknown field name',
      multipartBody(B, [fieldPart('purpose', 'batch'), fieldPart('porpose', 'batch'), filePart(jsonl)]),
      ct,
      400,
      'invalid_request',
      /Unknown parameter "porpose"/,
    ],
    [
      'file part under another name',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl, 'a.jsonl', 'upload')]),
      ct,
      400,
      'invalid_request',
      /part named "file"/,
    ],
    [
      'file field without filename',
      multipartBody(B, [
        fieldPart('purpose', 'batch'),
        { headers: ['Content-Disposition: form-data; name="file"'], body: jsonl },
      ]),
      ct,
      400,
      'missing_required_parameter',
      /no filename/,
    ],
    [
      'no boundary',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl)]),
      'multipart/form-data',
      400,
      'invalid_multipart',
      /multipart/,
    ],
    [
      'bogus boundary',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl)]),
      'multipart/form-data; boundary=nothere',
      400,
      'missing_required_parameter',
      /Missing the "file" part/,
    ],
    [
      'truncated body (in the file data)',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl)], false).subarray(0, 220),
      ct,
      400,
      'invalid_multipart',
      /ended before|could not be read/,
    ],
    [
      'truncated body (in a part header)',
      multipartBody(B, [fieldPart('purpose', 'batch'), filePart(jsonl)], false).subarray(0, 150),
      ct,
      400,
      'missing_required_parameter',
      /Missing the "file" part/,
    ],
    [
      'a part without a name',
      multipartBody(B, [
        fieldPart('purpose', 'batch'),
        { headers: ['Content-Disposition: form-data;\u0000name="file"; filename="in.jsonl"'], body: jsonl },
      ]),
      ct,
      400,
      'invalid_multipart',
      /has no name/,
    ],
    [
      'duplicate purpose',
      multipartBody(B, [fieldPart('purpose', 'batch'), fieldPart('purpose', 'batch'), filePart(jsonl)]),
      ct,
      400,
      'invalid_request',
      /more than once/,
    ],
    [
      'purpose missing after the file',
      multipartBody(B, [filePart(jsonl)]),
      ct,
      400,
      'missing_required_parameter',
      /Missing "purpose"/,
    ],
    [
      'no content type',
      multipartBody(B, [filePart(jsonl)]),
      undefined,
      415,
      'unsupported_media_type',
      /multipart\/form-data/,
    ],
    [
      'prototype field name',
      multipartBody(B, [fieldPart('__proto__', 'x'), filePart(jsonl)]),
      ct,
      400,
      'invalid_multipart',
      /field name is not allowed|Unknown parameter/,
    ],
  ];
  for (const [name, payload, type, status, code, message] of cases) {
    it(`refuses: ${name}`, async () => {
      const before = storedIds(small);
      const r = await inject(small, payload, type);
      expect(expectEnvelope(r, status, code)).toMatch(message);
      expect(storedIds(small)).toEqual(before);
      expect(readdirSync(tmpDir(small))).toEqual([]);
    });
  }

  it("accepts purpose after the file (field order is the client's choice), and an empty file", async () => {
    const r = await inject(small, multipartBody(B, [filePart(jsonl), fieldPart('purpose', 'batch')]), ct);
    expect(r.status).toBe(200);
    expect(r.body.id).toMatch(FILE_ID);
    const empty = await inject(small, multipartBody(B, [fieldPart('purpose', 'batch'), filePart('')]), ct);
    expect(empty.status).toBe(200);
    // An empty batch file is caught where it can be explained: when a batch is created from it.
    const b = await small.client.batches.create({
      input_file_id: empty.body.id!,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const failed = await waitStatus(small, b.id, 'failed');
    expect(failed.errors?.data?.map((e) => e.code)).toEqual(['empty_file']);
  });

  it('never crashes on random mutations of a valid multipart body', async () => {
    const valid = multipartBody(B, [fieldPart('purpose', 'user_data'), filePart(jsonl)]);
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'dup')),
          { minLength: 1, maxLength: 4 },
        ),
        async (edits) => {
          let buf = Buffer.from(valid);
          for (const [at, byte, op] of edits) {
            const i = at % Math.max(1, buf.length);
            if (op === 'set') buf[i] = byte;
            else if (op === 'cut') buf = Buffer.concat([buf.subarray(0, i), buf.subarray(i + 1 + (byte % 20))]);
            else buf = Buffer.concat([buf.subarray(0, i), buf.subarray(i, i + (byte % 40)), buf.subarray(i)]);
          }
          const r = await inject(small, buf, ct);
          expect(readdirSync(tmpDir(small)), `temp files left after ${r.status} ${JSON.stringify(r.body)}`).toEqual([]);
          expect(r.status, JSON.stringify(r.body)).toBeLessThan(500);
          if (r.status >= 400) expect(Object.keys(r.body.error!).sort()).toEqual(['code', 'message', 'param', 'type']);
          else expect(r.body.id).toMatch(FILE_ID);
        },
      ),
      // fast-check prints the seed and path of a failure; replay it with { seed, path } here.
      // Found cases stay as examples. [[0, 0, 'set']] (seed -1045408744): the first boundary
      // broken, the body then cut inside the file part, left a temp file (fixed in
      // store/file-storage.ts; test/integration/file-storage.test.ts pins the race itself).
      { numRuns: fuzzRuns(300), examples: [[[[0, 0, 'set']]]] },
    );
    expect(readdirSync(tmpDir(small))).toEqual([]);
    expect(storedIds(small).every((n) => FILE_ID.test(n))).toBe(true);
  });
});

/** 60+ file names that try to escape the storage folder, inject headers or break displays. */
const EVIL_NAMES = [
  '../../etc/passwd',
  '../../../../../../../../etc/shadow',
  '..\\..\\windows\\system32\\config\\sam',
  '..\\..\\win',
  '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '%2e%2e/%2e%2e/x',
  '..%2f..%2fx',
  '..%5c..%5cx',
  '%252e%252e%252fx',
  '/etc/passwd',
  '/tmp/bw-evil-abs.jsonl',
  'C:\\Windows\\win.ini',
  'C:/Windows/win.ini',
  '\\\\server\\share\\x.jsonl',
  '//server/share/x',
  'a\u0000b.jsonl',
  '../x\u0000.jsonl',
  'x.jsonl\u0000../../etc/passwd',
  '\u2025/\u2025/etc/passwd',
  '\uff0e\uff0e\uff0fetc\uff0fpasswd',
  '\u2024\u2024\u2215etc\u2215passwd',
  '..\u2215..\u2215x',
  '\u2216..\u2216x',
  '\ufe52\ufe52/x',
  '.',
  '..',
  '...',
  '....//....//x',
  '.../.../x',
  '',
  ' ',
  '   ',
  '.jsonl',
  '.bashrc',
  '~/.ssh/authorized_keys',
  '~root/x',
  '$HOME/x',
  '`rm -rf /`',
  '$(touch /tmp/bw-pwned)',
  'CON',
  'PRN.jsonl',
  'AUX',
  'NUL.txt',
  'COM1',
  'LPT1.jsonl',
  'con.jsonl:stream',
  'x.jsonl::$DATA',
  'x'.repeat(300),
  `${'é'.repeat(300)}.jsonl`,
  `${'💥'.repeat(300)}.jsonl`,
  'a'.repeat(5000),
  'line\nbreak.jsonl',
  'carriage\rreturn.jsonl',
  'crlf\r\nX-Injected: 1.jsonl',
  'quote".jsonl',
  "single'.jsonl",
  'semi;colon.jsonl',
  'inj"; filename="evil.sh',
  "x; filename*=UTF-8''..%2F..%2Fevil.sh",
  'tab\t.jsonl',
  '\u202eflip.jsonl',
  '\u2066\u2067\u2068\u2069x.jsonl',
  '\u200b\u200c\u200d.jsonl',
  '\ufeffbom.jsonl',
  '<script>alert(1)</script>.jsonl',
  'back\\slash.jsonl',
  'new/../../dir/x.jsonl',
  'file-AAAAAAAAAAAAAAAAAAAAAAAA',
  '../file-AAAAAAAAAAAAAAAAAAAAAAAA',
  'tmp/../../x.part',
];

/** Quotes a name into a multipart header the way a careless client would (raw) or a careful one (escaped, RFC 7578). */
function dispositionFor(name: string, style: 'raw' | 'escaped' | 'ext'): string {
  if (style === 'ext')
    return `Content-Disposition: form-data; name="file"; filename*=UTF-8''${encodeURIComponent(name).replace(/'/g, '%27')}`;
  const v =
    style === 'raw'
      ? name
      : name.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
  return `Content-Disposition: form-data; name="file"; filename="${v}"`;
}

describe('path traversal and header injection in file names', () => {
  it(`stores ${EVIL_NAMES.length} hostile names × 3 encodings only under ids, sanitised, with a safe Content-Disposition`, async () => {
    expect(EVIL_NAMES.length).toBeGreaterThanOrEqual(50);
    const root = small.app.deps.storage.root;
    const dataDir = small.dataDir;
    // Where each name would land if it were ever used as a path; those that do not exist yet must not exist after.
    /* eslint-disable no-control-regex -- on purpose: NUL is how a hostile name would cut a path short */
    const wouldBe = EVIL_NAMES.flatMap((n) => [
      path.resolve(root, n.replace(/\u0000/g, '')),
      path.resolve(dataDir, n.replace(/\u0000/g, '')),
    ]).filter((p) => !existsSync(p));
    /* eslint-enable no-control-regex */
    const before = new Set(storedIds(small));
    const filesDir = path.relative(dataDir, root);
    const outsideStorage = () =>
      readdirSync(dataDir, { recursive: true })
        .map(String)
        .filter((rel) => rel !== filesDir && !rel.startsWith(filesDir + path.sep))
        .sort();
    const othersBefore = outsideStorage();
    let uploads = 0;
    for (const name of EVIL_NAMES) {
      for (const style of ['raw', 'escaped', 'ext'] as const) {
        const payload = Buffer.concat([
          Buffer.from(
            `--X\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n--X\r\n${dispositionFor(name, style)}\r\nContent-Type: text/plain\r\n\r\n`,
          ),
          Buffer.from('hello\n'),
          Buffer.from('\r\n--X--\r\n'),
        ]);
        const r = await inject(small, payload, 'multipart/form-data; boundary=X');
        const what = `${JSON.stringify(name).slice(0, 80)} (${style}) → ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`;
        // A CR/LF (raw, or percent-encoded in filename*) or a raw quote breaks the part header:
        // the part loses its filename or is dropped, and the answer is a clear 400. Anything else is stored.
        expect([200, 400], what).toContain(r.status);
        if (r.status === 400) {
          expect(/[\r\n]/.test(name) || (style === 'raw' && /"/.test(name)), what).toBe(true);
          expect(r.body.error!.message, what).toMatch(/Send/);
          continue;
        }
        uploads += 1;
        const id = r.body.id!;
        const shown = r.body.filename!;
        expect(id, what).toMatch(FILE_ID);
        // eslint-disable-next-line no-control-regex -- on purpose: no control character may survive in a shown name
        expect(shown, what).not.toMatch(/[/\\\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069]/);
        expect(shown.length, what).toBeGreaterThan(0);
        expect(Array.from(shown).length, what).toBeLessThanOrEqual(255);
        expect(['.', '..'], what).not.toContain(shown);
        const content = await small.app.inject({ method: 'GET', url: `/v1/files/${id}/content` });
        expect(content.statusCode, what).toBe(200);
        expect(content.body).toBe('hello\n');
        const cd = String(content.headers['content-disposition']);
        // One header, ASCII only, no quotes, separators or line breaks a browser could be tricked by.
        expect(cd, what).toMatch(/^attachment; filename\*=UTF-8''[A-Za-z0-9%!._~-]*$/);
        expect(decodeURIComponent(cd.slice("attachment; filename*=UTF-8''".length)), what).toBe(shown);
        expect(Object.keys(content.headers).some((h) => h.toLowerCase().startsWith('x-injected'))).toBe(false);
      }
    }
    expect(uploads).toBeGreaterThanOrEqual(150);
    // Only id-named files in storage, nothing new outside it.
    const added = storedIds(small).filter((n) => !before.has(n));
    expect(added).toHaveLength(uploads);
    expect(added.every((n) => FILE_ID.test(n))).toBe(true);
    expect(readdirSync(tmpDir(small))).toEqual([]);
    for (const p of wouldBe) expect(existsSync(p), p).toBe(false);
    expect(existsSync('/tmp/bw-pwned')).toBe(false);
    expect(existsSync('/tmp/bw-evil-abs.jsonl')).toBe(false);
    // Nothing appeared in DATA_DIR outside the storage folder (the db and its WAL may grow, not multiply).
    expect(outsideStorage().filter((n) => !othersBefore.includes(n) && !/-(wal|shm|journal)$/.test(n))).toEqual([]);
  });
});

describe('stalled uploads', () => {
  for (const mode of ['stall', 'trickle-then-stall'] as const) {
    it(`cut off after UPLOAD_IDLE_TIMEOUT_MS with 408 and the partial file removed (${mode})`, async () => {
      const before = storedIds(small);
      const B = 'bwslow';
      const req = request(`${small.baseUrl}/v1/files`, {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${B}` },
      });
      let closedAt = 0;
      const started = Date.now();
      req.on('error', () => undefined);
      const response = new Promise<{ status: number; body: string }>((resolve) => {
        req.on('response', (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          res.on('close', () => (closedAt = Date.now()));
        });
        req.on('close', () => {
          closedAt ||= Date.now();
          resolve({ status: 0, body: '' });
        });
      });
      req.write(
        `--${B}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--${B}\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n\r\n`,
      );
      req.write(Buffer.alloc(32 * 1024, 0x61));
      if (mode === 'trickle-then-stall') {
        // Slower than the idle timeout in total, but never silent for that long: not cut.
        // Pacing, not a wait: IDLE_MS / 3 apart leaves a second of slack for a stalled event loop.
        for (let i = 0; i < 6; i++) {
          await sleep(IDLE_MS / 3);
          req.write('b');
        }
        expect(Date.now() - started).toBeGreaterThan(IDLE_MS * 1.5);
        expect(closedAt).toBe(0);
      }
      const deadline = Date.now() + 5000;
      while (readdirSync(tmpDir(small)).length === 0 && Date.now() < deadline) await sleep(10);
      expect(readdirSync(tmpDir(small))).toHaveLength(1);
      const stalledAt = Date.now();
      const r = await Promise.race([response, sleep(IDLE_MS * 10).then(() => ({ status: -1, body: 'still open' }))]);
      expect(r.status).toBe(408);
      expect(JSON.parse(r.body).error).toMatchObject({
        code: 'request_timeout',
        type: 'invalid_request_error',
        param: 'file',
      });
      expect(JSON.parse(r.body).error.message).toMatch(/UPLOAD_IDLE_TIMEOUT_MS/);
      expect(Date.now() - stalledAt).toBeGreaterThanOrEqual(IDLE_MS * 0.8);
      // The connection is closed (the rest of the body never comes), and the partial file is gone.
      while (!closedAt && Date.now() < deadline + 5000) await sleep(10);
      expect(closedAt).toBeGreaterThan(0);
      while (readdirSync(tmpDir(small)).length > 0 && Date.now() < deadline + 5000) await sleep(10);
      expect(readdirSync(tmpDir(small))).toEqual([]);
      expect(storedIds(small)).toEqual(before);
      req.destroy();
    });
  }
});

async function waitStatus(s: TestServer, id: string, status: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await s.client.batches.retrieve(id);
    if (b.status === status) return b;
    if (Date.now() > deadline) throw new Error(`batch ${id} is ${b.status}, not ${status}`);
    await sleep(50);
  }
}

async function upload(s: TestServer, bytes: Buffer): Promise<string> {
  const r = await inject(
    s,
    multipartBody('bwb', [fieldPart('purpose', 'batch'), filePart(bytes)]),
    'multipart/form-data; boundary=bwb',
  );
  expect(r.status).toBe(200);
  return r.body.id!;
}

const line = (id: string, extra = '') =>
  `{"custom_id":"${id}","method":"POST","url":"/v1/chat/completions","body":{"model":"${SIM_MODEL}","messages":[{"role":"user","content":"hi"}]${extra}}}`;

describe('hostile batch files (validated by the control plane, no worker)', () => {
  it('invalid UTF-8 on line 3: the batch fails with invalid_utf8 at line 3', async () => {
    const bytes = Buffer.concat([
      Buffer.from(`${line('a')}\n${line('b')}\n`),
      Buffer.from(line('c').replace('hi', 'h\u00ffi'), 'latin1'),
      Buffer.from(`\n${line('d')}\n`),
    ]);
    const b = await big.client.batches.create({
      input_file_id: await upload(big, bytes),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const failed = await waitStatus(big, b.id, 'failed');
    expect(failed.errors?.data?.map((e) => [e.line, e.code])).toEqual([[3, 'invalid_utf8']]);
    expect(failed.errors?.data?.[0]?.message).toMatch(/Line 3 is not valid UTF-8\. Save the file as UTF-8/);
  });

  it('a 12 MB line within the 16 MiB line limit is accepted; a 17 MB line is reported with its line number', async () => {
    const pad = (n: number) => `,"pad":"${'p'.repeat(n)}"`;
    const ok = await big.client.batches.create({
      input_file_id: await upload(big, Buffer.from(`${line('a', pad(12 << 20))}\n${line('b')}\n`)),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const running = await waitStatus(big, ok.id, 'in_progress');
    expect(running.request_counts?.total).toBe(2);
    await big.client.batches.cancel(ok.id);
    const tooLong = await big.client.batches.create({
      input_file_id: await upload(big, Buffer.from(`${line('a')}\n${line('b', pad(17 << 20))}\n${line('c')}\n`)),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const failed = await waitStatus(big, tooLong.id, 'failed');
    expect(failed.errors?.data?.map((e) => [e.line, e.code])).toEqual([[2, 'line_too_long']]);
  });

  it('a line nested 100k levels deep fails validation at its line; the server stays up', async () => {
    const deep = line('deep', `,"x":${deepJson(100_000)}`);
    const deepObj = line('deep2', `,"x":${deepJson(100_000, 'object')}`);
    const b = await big.client.batches.create({
      input_file_id: await upload(big, Buffer.from(`${line('a')}\n${deep}\n${deepObj}\n`)),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const failed = await waitStatus(big, b.id, 'failed');
    expect(failed.errors?.data?.map((e) => [e.line, e.code])).toEqual([
      [2, 'invalid_json_line'],
      [3, 'invalid_json_line'],
    ]);
    expect(failed.errors?.data?.[0]?.message).toMatch(/more than 256 levels deep/);
    expect((await big.app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });

  it('a BOM at the start of the file is ignored (Windows editors write one)', async () => {
    const b = await big.client.batches.create({
      input_file_id: await upload(big, Buffer.from(`\ufeff${line('a')}\r\n${line('b')}\r\n`)),
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const running = await waitStatus(big, b.id, 'in_progress');
    expect(running.request_counts?.total).toBe(2);
    await big.client.batches.cancel(b.id);
  });
});
