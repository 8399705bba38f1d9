import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { createLogger } from '../../src/log/logger.js';
import { createBatchesRepo } from '../../src/store/batches-repo.js';
import { openDb } from '../../src/store/db.js';
import { createWebhookDeliveriesRepo } from '../../src/store/webhook-deliveries-repo.js';
import { loadWebhookSecret } from '../../src/webhooks/secret.js';
import { sendWebhook } from '../../src/webhooks/send.js';
import { parseAllowList, type Resolver } from '../../src/webhooks/ssrf.js';
import { createWebhooks } from '../../src/webhooks/webhooks.js';
import { startReceiver } from './webhooks-receiver.js';

const LOOPBACK = parseAllowList('127.0.0.1');
const headers = { 'webhook-id': 'msg_x', 'webhook-timestamp': '1', 'webhook-signature': 'v1,x' };
const SECRET = `whsec_${Buffer.alloc(32, 3).toString('base64')}`;

async function waitFor<T>(what: string, fn: () => T | undefined | false, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function logSink() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l) {
          raw.push(l);
          lines.push(JSON.parse(l) as Record<string, unknown>);
        }
      cb();
    },
  });
  return { log: createLogger('debug', sink), lines, raw };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'bw-wh-'));
  dirs.push(d);
  return d;
};

describe('sendWebhook (real sockets on loopback)', () => {
  it('posts the body with the given headers and reports 2xx as delivered', async () => {
    const rx = await startReceiver();
    onTestFinished(rx.close);
    const r = await sendWebhook({ url: `${rx.url}/hook?x=1`, body: '{"a":1}', headers, allow: LOOPBACK });
    expect(r).toEqual({ ok: true, status: 200 });
    expect(rx.received).toHaveLength(1);
    expect(rx.received[0]).toMatchObject({
      body: '{"a":1}',
      path: '/hook?x=1',
      headers: { 'webhook-id': 'msg_x', 'content-type': 'application/json' },
    });
  });

  it('does not follow a redirect from an allowed receiver to 127.0.0.1 (302 and 307)', async () => {
    const internal = await startReceiver({ host: '127.0.0.2' });
    onTestFinished(internal.close);
    for (const code of [302, 307]) {
      const rx = await startReceiver({
        answer: (_n, _r, res) => res.writeHead(code, { location: `${internal.url}/admin` }).end(),
      });
      onTestFinished(rx.close);
      // Even with the redirect's target allowed, a redirect is never followed.
      const r = await sendWebhook({ url: rx.url, body: '{}', headers, allow: parseAllowList('127.0.0.1,127.0.0.2') });
      expect(r).toMatchObject({
        ok: false,
        status: code,
        retryable: true,
        error: expect.stringMatching(/redirects are not followed/),
      });
      expect(rx.received).toHaveLength(1);
    }
    expect(internal.received).toHaveLength(0);
  });

  it('does not follow a redirect to another port of the allowed 127.0.0.1 either', async () => {
    const target = await startReceiver();
    onTestFinished(target.close);
    const rx = await startReceiver({
      answer: (_n, _r, res) => res.writeHead(301, { location: `${target.url}/` }).end(),
    });
    onTestFinished(rx.close);
    expect(await sendWebhook({ url: rx.url, body: '{}', headers, allow: LOOPBACK })).toMatchObject({
      ok: false,
      status: 301,
    });
    expect(target.received).toHaveLength(0);
  });

  it('refuses 127.0.0.1 without the allow-list, sending nothing', async () => {
    const rx = await startReceiver();
    onTestFinished(rx.close);
    const r = await sendWebhook({ url: rx.url, body: '{}', headers, allow: parseAllowList(undefined) });
    expect(r).toMatchObject({
      ok: false,
      retryable: false,
      error: expect.stringMatching(/refused: address 127\.0\.0\.1 is loopback/),
    });
    expect(rx.received).toHaveLength(0);
  });

  it('DNS rebinding: the socket goes to the vetted address; the next answer (internal) is refused', async () => {
    // "public" receiver on 127.0.0.1 (allowed), "internal" one on 127.0.0.2, same port.
    const pub = await startReceiver();
    onTestFinished(pub.close);
    const internal = await startReceiver({ host: '127.0.0.2', port: pub.port });
    onTestFinished(internal.close);
    const answers = [['127.0.0.1'], ['127.0.0.2']];
    let calls = 0;
    const resolve: Resolver = async () =>
      (answers[Math.min(calls++, 1)] ?? []).map((address) => ({ address, family: 4 as const }));
    const url = `http://rebind.test:${pub.port}/`; // a name the system resolver does not know: only the pinned lookup can connect
    expect(await sendWebhook({ url, body: '{}', headers, allow: LOOPBACK, resolve })).toEqual({
      ok: true,
      status: 200,
    });
    expect(calls).toBe(1);
    expect(pub.received).toHaveLength(1);
    expect(pub.received[0]!.headers.host).toBe(`rebind.test:${pub.port}`);
    const second = await sendWebhook({ url, body: '{}', headers, allow: LOOPBACK, resolve });
    expect(second).toMatchObject({
      ok: false,
      retryable: false,
      error: expect.stringMatching(/127\.0\.0\.2 is loopback/),
    });
    expect(internal.received).toHaveLength(0);
  });

  it('times out a receiver that never answers, as a retryable failure', async () => {
    const rx = await startReceiver({ answer: () => undefined });
    onTestFinished(rx.close);
    const t0 = Date.now();
    const r = await sendWebhook({ url: rx.url, body: '{}', headers, allow: LOOPBACK, timeoutMs: 300 });
    expect(r).toMatchObject({ ok: false, status: null, retryable: true, error: expect.stringMatching(/timeout/i) });
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it('a 4xx or 5xx is a retryable failure with its status', async () => {
    const rx = await startReceiver({ answer: (n, _r, res) => res.writeHead(n === 0 ? 404 : 503).end('no') });
    onTestFinished(rx.close);
    expect(await sendWebhook({ url: rx.url, body: '{}', headers, allow: LOOPBACK })).toMatchObject({
      ok: false,
      status: 404,
      retryable: true,
    });
    expect(await sendWebhook({ url: rx.url, body: '{}', headers, allow: LOOPBACK })).toMatchObject({
      ok: false,
      status: 503,
      retryable: true,
    });
  });
});

describe('webhook signing secret', () => {
  it('is generated once under DATA_DIR (mode 0600), reused after, and never logged', () => {
    const dir = tempDir();
    const { log, raw } = logSink();
    const s1 = loadWebhookSecret(undefined, dir, log);
    expect(s1).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(s1.slice(6), 'base64')).toHaveLength(32);
    const file = path.join(dir, 'webhook-secret');
    expect(readFileSync(file, 'utf8').trim()).toBe(s1);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadWebhookSecret(undefined, dir, log)).toBe(s1);
    expect(raw.join('\n')).toContain(file);
    expect(raw.join('\n')).not.toContain(s1.slice(6));
  });

  it('WEBHOOK_SECRET wins, and a malformed one is refused', () => {
    const dir = tempDir();
    const { log } = logSink();
    expect(loadWebhookSecret(SECRET, dir, log)).toBe(SECRET);
    expect(() => loadWebhookSecret('whsec_short', dir, log)).toThrow(/WEBHOOK_SECRET/);
  });
});

describe('webhook delivery loop (real SQLite, real receiver)', () => {
  const setup = (dir: string, extra: Partial<Parameters<typeof createWebhooks>[0]['options']> = {}) => {
    const db = openDb(path.join(dir, 'db.sqlite'));
    const batches = createBatchesRepo(db);
    const deliveries = createWebhookDeliveriesRepo(db);
    const { log, lines, raw } = logSink();
    const webhooks = createWebhooks({
      batches,
      deliveries,
      log,
      options: { secret: SECRET, allow: LOOPBACK, retryBaseMs: 50, maxAttempts: 5, timeoutMs: 2000, ...extra },
    });
    return { db, batches, deliveries, webhooks, lines, raw };
  };
  const endBatch = (s: ReturnType<typeof setup>, url: string, status = 'completed') => {
    const id = `batch_t${Math.random().toString(36).slice(2)}`;
    s.batches.insert({
      id,
      endpoint: '/v1/chat/completions',
      inputFileId: 'file-x',
      completionWindow: '24h',
      status,
      createdAt: 1,
      expiresAt: 2,
      completedAt: 3,
      metadata: JSON.stringify({ webhook_url: url }),
    });
    s.batches.transaction(() => s.webhooks.recordEnded(id));
    return id;
  };

  it('retries 500, 500, then delivers on the 3rd attempt; logs each attempt without secret or signature', async () => {
    const rx = await startReceiver({ answer: (n, _r, res) => res.writeHead(n < 2 ? 500 : 200).end() });
    onTestFinished(rx.close);
    const s = setup(tempDir());
    onTestFinished(async () => {
      await s.webhooks.stop();
      s.db.$client.close();
    });
    s.webhooks.start();
    const id = endBatch(s, `${rx.url}/h`);
    const row = await waitFor('delivered', () => s.deliveries.listForBatch(id).find((r) => r.state === 'delivered'));
    expect(row.attempts).toBe(3);
    expect(rx.received).toHaveLength(3);
    // Same webhook-id on every retry, each signature valid for its own timestamp.
    for (const r of rx.received) {
      expect(r.headers['webhook-id']).toBe(row.id);
      expect(new Webhook(SECRET).verify(r.body, r.headers as Record<string, string>)).toMatchObject({
        type: 'batch.completed',
        data: { id },
      });
    }
    const attempts = s.lines.filter((l) => String(l.msg).startsWith('webhook deliver'));
    expect(attempts.map((l) => [l.attempt, l.status])).toEqual([
      [1, 500],
      [2, 500],
      [3, 200],
    ]);
    expect(attempts[0]).toMatchObject({
      level: 30,
      batchId: id,
      webhookId: row.id,
      eventId: expect.stringMatching(/^evt_/),
    });
    const text = s.raw.join('\n');
    expect(text).not.toContain(SECRET.slice(6));
    for (const r of rx.received) expect(text).not.toContain(String(r.headers['webhook-signature']).slice(3));
  });

  it('gives up after the last attempt, state failed with the last error', async () => {
    const rx = await startReceiver({ answer: (_n, _r, res) => res.writeHead(502).end() });
    onTestFinished(rx.close);
    const s = setup(tempDir(), { maxAttempts: 3 });
    onTestFinished(async () => {
      await s.webhooks.stop();
      s.db.$client.close();
    });
    s.webhooks.start();
    const id = endBatch(s, rx.url);
    const row = await waitFor('failed', () => s.deliveries.listForBatch(id).find((r) => r.state === 'failed'));
    expect(row).toMatchObject({ attempts: 3, lastError: 'HTTP 502' });
    // A negative check: no 4th attempt after the row failed. The receiver records each request
    // before answering, so the 3 are in already; 300 ms is many retry intervals of this setup.
    await sleep(300);
    expect(rx.received).toHaveLength(3);
  });

  it('the event commits with the transaction that ends the batch, or not at all', async () => {
    const s = setup(tempDir());
    onTestFinished(() => void s.db.$client.close());
    const id = `batch_rollback`;
    s.batches.insert({
      id,
      endpoint: '/v1/chat/completions',
      inputFileId: 'file-x',
      completionWindow: '24h',
      status: 'finalizing',
      createdAt: 1,
      expiresAt: 2,
      metadata: JSON.stringify({ webhook_url: 'http://127.0.0.1:9/' }),
    });
    expect(() =>
      s.batches.transaction(() => {
        s.batches.transition(id, ['finalizing'], 'completed', 5);
        s.webhooks.recordEnded(id);
        throw new Error('disk full while committing the output file');
      }),
    ).toThrow(/disk full/);
    expect(s.batches.get(id)!.status).toBe('finalizing');
    expect(s.deliveries.listForBatch(id)).toHaveLength(0);
    s.batches.transaction(() => {
      s.batches.transition(id, ['finalizing'], 'completed', 6);
      s.webhooks.recordEnded(id);
    });
    expect(s.deliveries.listForBatch(id).map((r) => [r.eventType, JSON.parse(r.payload).created_at])).toEqual([
      ['batch.completed', 6],
    ]);
  });

  it('an event recorded twice (finalize resumed) is delivered once; a refused URL fails at once without retries', async () => {
    const rx = await startReceiver();
    onTestFinished(rx.close);
    const s = setup(tempDir());
    onTestFinished(async () => {
      await s.webhooks.stop();
      s.db.$client.close();
    });
    const id = endBatch(s, rx.url);
    s.batches.transaction(() => s.webhooks.recordEnded(id));
    expect(s.deliveries.listForBatch(id)).toHaveLength(1);
    const bad = endBatch(s, 'http://10.0.0.1/h');
    s.webhooks.start();
    await waitFor('delivered', () => s.deliveries.listForBatch(id)[0]?.state === 'delivered');
    const refused = await waitFor('refused', () => s.deliveries.listForBatch(bad).find((r) => r.state === 'failed'));
    expect(refused).toMatchObject({
      attempts: 1,
      lastError: expect.stringMatching(/refused: address 10\.0\.0\.1 is private/),
    });
    // A negative check: the event recorded twice is not delivered a second time (a duplicate is
    // sent right after the first; 200 ms leaves room for it); late only makes this pass.
    await sleep(200);
    expect(rx.received).toHaveLength(1);
  });

  it('survives a restart: a pending retry in SQLite is delivered by the next process', async () => {
    const dir = tempDir();
    const rx0 = await startReceiver();
    const url = rx0.url;
    const port = rx0.port;
    await rx0.close(); // receiver down: connection refused
    const a = setup(dir, { retryBaseMs: 200 });
    a.webhooks.start();
    const id = endBatch(a, url);
    await waitFor('a failed attempt', () => (a.deliveries.listForBatch(id)[0]?.attempts ?? 0) >= 1);
    await a.webhooks.stop();
    a.db.$client.close();
    const peek = openDb(path.join(dir, 'db.sqlite'));
    expect(createWebhookDeliveriesRepo(peek).listForBatch(id)[0]).toMatchObject({
      state: 'pending',
      lastError: expect.stringMatching(/ECONNREFUSED/),
    });
    peek.$client.close();

    const rx = await startReceiver({ port });
    onTestFinished(rx.close);
    const b = setup(dir, { retryBaseMs: 200 });
    onTestFinished(async () => {
      await b.webhooks.stop();
      b.db.$client.close();
    });
    b.webhooks.start();
    await waitFor('delivered after restart', () => b.deliveries.listForBatch(id)[0]?.state === 'delivered');
    expect(rx.received).toHaveLength(1);
  });
});
