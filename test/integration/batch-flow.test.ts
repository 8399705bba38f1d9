import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const tmp = () => mkdtempSync(path.join(tmpdir(), 'bw-in-'));

describe('batch pipeline', () => {
  it('runs a chat batch to completed with one output line per custom_id', async () => {
    server = await startTestServer({ worker: true });
    const { client } = server;
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(50, SIM_MODEL))),
      purpose: 'batch',
    });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { run: 'a' },
    });
    expect(created.status).toBe('validating');
    const done = await waitForBatch(client, created.id, ['completed', 'failed']);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 50, completed: 50, failed: 0 });
    expect(done.model).toBe(SIM_MODEL);
    expect(done.usage?.output_tokens).toBe(50 * 8);
    const out = await readLinesOf(client, done.output_file_id);
    expect(out.map((l) => l.custom_id).sort()).toEqual(Array.from({ length: 50 }, (_, i) => `req-${i}`).sort());
    for (const l of out) {
      expect(l.response.status_code).toBe(200);
      expect(l.response.body.choices[0].message.content).toContain(`number ${l.custom_id.slice(4)}`);
    }
    expect(done.error_file_id).toBeNull();
  });
});

describe('logs', () => {
  it('never contain prompts, completions or API keys, even at debug level', async () => {
    server = await startTestServer({ worker: true, captureLogs: true });
    const secretPrompt = 'canary-prompt-7f3a9c';
    const secretKey = 'sk-canary-key-51b2e8';
    const client = new OpenAI({ baseURL: `${server.baseUrl}/v1`, apiKey: secretKey, maxRetries: 0 });
    const lines = chatLines(5, SIM_MODEL, () => ({ messages: [{ role: 'user', content: secretPrompt }] }));
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', lines)),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const done = await waitForBatch(client, b.id, ['completed']);
    const out = await readLinesOf(client, done.output_file_id);
    // The completion echoes the prompt, so a leaked completion would show the canary too.
    expect(out[0]!.response.body.choices[0].message.content).toContain(secretPrompt);
    const r = await client.chat.completions.create({
      model: SIM_MODEL,
      messages: [{ role: 'user', content: secretPrompt }],
    });
    expect(r.choices[0]!.message.content).toContain(secretPrompt);
    expect(server.logs.length).toBeGreaterThan(20);
    const all = JSON.stringify(server.logs);
    expect(all).not.toContain(secretPrompt);
    expect(all).not.toContain(secretKey);
    // Request ids are there, so the lines are useful.
    expect(server.logs.some((l) => typeof l.reqId === 'string')).toBe(true);
  });
});
