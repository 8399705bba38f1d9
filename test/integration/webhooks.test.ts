import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultModelsYaml, SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { assertMatchesSchema } from '../helpers/openapi.js';
import { waitUntil } from '../helpers/processes.js';
import { startReceiver, type Received } from './webhooks-receiver.js';

const SECRET = `whsec_${Buffer.alloc(32, 11).toString('base64')}`;
const SCHEMA = {
  'batch.completed': 'WebhookBatchCompleted',
  'batch.failed': 'WebhookBatchFailed',
  'batch.expired': 'WebhookBatchExpired',
  'batch.cancelled': 'WebhookBatchCancelled',
} as const;

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-wh-in-'));

async function createBatch(server: TestServer, lines: string, webhookUrl: string) {
  const f = await server.client.files.create({
    file: createReadStream(writeJsonl(tmp(), 'in.jsonl', lines)),
    purpose: 'batch',
  });
  return server.client.batches.create({
    input_file_id: f.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { webhook_url: webhookUrl, team: 'a' },
  });
}

async function waitForEvents(rx: { received: Received[] }, n: number, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (rx.received.length < n) {
    if (Date.now() > deadline) throw new Error(`got ${rx.received.length} of ${n} webhook events`);
    await sleep(50);
  }
}

/** Signature verifies, payload is OpenAI's event for this batch, in its terminal status. */
function checkEvent(r: Received, batch: OpenAI.Batches.Batch) {
  const event = new Webhook(SECRET).verify(r.body, r.headers as Record<string, string>) as Record<string, any>;
  const type = `batch.${batch.status}` as keyof typeof SCHEMA;
  expect(event).toMatchObject({ object: 'event', type, data: { id: batch.id } });
  assertMatchesSchema(SCHEMA[type], event);
  expect(event.id).toMatch(/^evt_/);
  expect(event.created_at).toBe((batch as unknown as Record<string, number>)[`${batch.status}_at`]);
  expect(r.headers['webhook-id']).toMatch(/^msg_/);
  return event;
}

describe('batch webhooks through the real API', () => {
  it("completed, cancelled and failed batches each post one signed event in OpenAI's shape", async () => {
    const rx = await startReceiver();
    open.push(rx);
    const server = await startTestServer({
      worker: true,
      modelsYaml: defaultModelsYaml({ ttft_ms: 40, max_concurrency: 2 }),
      env: { WEBHOOK_ALLOW_HOSTS: '127.0.0.1', WEBHOOK_SECRET: SECRET, WEBHOOK_RETRY_BASE_MS: '100' },
    });
    open.push(server);

    const completed = await createBatch(server, chatLines(3, SIM_MODEL), `${rx.url}/completed`);
    const failed = await createBatch(
      server,
      '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"no-such-model","messages":[]}}\n{"not":"a request"}\n',
      `${rx.url}/failed`,
    );
    // Cancelled at once, usually while still validating (no model yet): that path must end too.
    const cancelled = await createBatch(server, chatLines(300, SIM_MODEL), `${rx.url}/cancelled`);
    await server.client.batches.cancel(cancelled.id);

    const ends = {
      completed: await waitForBatch(server.client, completed.id, ['completed', 'failed'], 120_000),
      failed: await waitForBatch(server.client, failed.id, ['failed', 'completed'], 120_000),
      cancelled: await waitForBatch(server.client, cancelled.id, ['cancelled'], 120_000),
    };
    expect(ends.completed.status).toBe('completed');
    expect(ends.failed.status).toBe('failed');
    await waitForEvents(rx, 3);
    // A negative check: no duplicate may follow. Retries here are 100 ms apart (WEBHOOK_RETRY_BASE_MS),
    // so a duplicate would land well within 1 s; a late one under load only makes this pass, not flake.
    await sleep(1000);
    expect(rx.received).toHaveLength(3);
    for (const [name, batch] of Object.entries(ends)) {
      const got = rx.received.filter((r) => r.path === `/${name}`);
      expect(got, name).toHaveLength(1);
      checkEvent(got[0]!, batch);
    }
  }, 180_000);

  it('retries a receiver that answers 500 twice, delivers on the 3rd attempt, and logs each attempt', async () => {
    const rx = await startReceiver({ answer: (n, _r, res) => res.writeHead(n < 2 ? 500 : 200).end() });
    open.push(rx);
    const server = await startTestServer({
      worker: true,
      captureLogs: true,
      env: { WEBHOOK_ALLOW_HOSTS: '127.0.0.1', WEBHOOK_SECRET: SECRET, WEBHOOK_RETRY_BASE_MS: '100' },
    });
    open.push(server);
    const b = await createBatch(server, chatLines(2, SIM_MODEL), `${rx.url}/flaky?token=t0ps3cret`);
    const done = await waitForBatch(server.client, b.id, ['completed']);
    await waitForEvents(rx, 3);
    // The 3rd attempt's log line is written once its 200 is back at the server.
    const deliverLines = () =>
      server.logs.filter((l) => l.component === 'webhooks' && String(l.msg).startsWith('webhook deliver'));
    await waitUntil(() => deliverLines().length >= 3, 30_000, 'the 3rd delivery attempt logged');
    // A negative check: no 4th attempt after the 200 (retries are 100 ms apart, so 500 ms would show one).
    await sleep(500);
    expect(rx.received).toHaveLength(3);
    const ids = new Set(rx.received.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(1); // the same webhook-id on every retry: receivers dedupe on it
    for (const r of rx.received) checkEvent(r, done);
    const attempts = deliverLines();
    expect(attempts.map((l) => [l.attempt, l.status, l.batchId])).toEqual([
      [1, 500, b.id],
      [2, 500, b.id],
      [3, 200, b.id],
    ]);
    const text = JSON.stringify(server.logs);
    expect(text).not.toContain(SECRET.slice(6));
    expect(text).not.toContain('t0ps3cret'); // only the host is logged, not the path or query
    for (const r of rx.received) expect(text).not.toContain(String(r.headers['webhook-signature']).slice(3));
  });

  it('an expired batch posts batch.expired; the server-wide WEBHOOK_URL gets it too', async () => {
    const rx = await startReceiver();
    open.push(rx);
    const server = await startTestServer({
      worker: true,
      modelsYaml: defaultModelsYaml({ ttft_ms: 100, max_concurrency: 2 }),
      env: {
        COMPLETION_WINDOW_S: '3',
        EXPIRY_SWEEP_MS: '200',
        WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
        WEBHOOK_SECRET: SECRET,
        WEBHOOK_RETRY_BASE_MS: '100',
        WEBHOOK_URL: `${rx.url}/ops`,
      },
    });
    open.push(server);
    const b = await createBatch(server, chatLines(300, SIM_MODEL), `${rx.url}/own`);
    const done = await waitForBatch(server.client, b.id, ['expired', 'completed'], 60_000);
    expect(done.status).toBe('expired');
    await waitForEvents(rx, 2);
    // A negative check: no third event (a retry would come 100 ms after an attempt, well within 500 ms).
    await sleep(500);
    expect(rx.received.map((r) => r.path).sort()).toEqual(['/ops', '/own']);
    const [e1, e2] = rx.received.map((r) => checkEvent(r, done));
    expect(e1!.id).toBe(e2!.id); // one event, two destinations
    expect(rx.received[0]!.headers['webhook-id']).not.toBe(rx.received[1]!.headers['webhook-id']);
  });

  it('refuses a webhook URL on 127.0.0.1 at create (400 invalid_webhook_url) when it is not allowed', async () => {
    const server = await startTestServer({ env: { WEBHOOK_SECRET: SECRET } });
    open.push(server);
    const f = await server.client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(1, SIM_MODEL))),
      purpose: 'batch',
    });
    for (const [url, reason] of [
      ['http://127.0.0.1:9/hook', /loopback/],
      ['http://2130706433/', /loopback/],
      ['http://[::ffff:127.0.0.1]/', /IPv4-mapped/],
      ['http://169.254.169.254/latest', /metadata/],
      ['http://localhost./', /local/],
      ['http://good.example@10.0.0.1/', /user info/],
      ['ftp://example.com/', /scheme/],
    ] as const) {
      const err = await server.client.batches
        .create({
          input_file_id: f.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
          metadata: { webhook_url: url },
        })
        .catch((e: unknown) => e);
      expect(err, url).toBeInstanceOf(OpenAI.BadRequestError);
      const e = err as InstanceType<typeof OpenAI.BadRequestError>;
      expect(e.code).toBe('invalid_webhook_url');
      expect(e.param).toBe('metadata.webhook_url');
      expect(e.message).toMatch(reason);
    }
    expect((await server.client.batches.list()).data).toHaveLength(0);
    // A public URL is accepted (delivery checks DNS again later).
    const ok = await server.client.batches.create({
      input_file_id: f.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { webhook_url: 'https://hooks.example.com/batch' },
    });
    expect(ok.metadata).toEqual({ webhook_url: 'https://hooks.example.com/batch' });
  });
});
