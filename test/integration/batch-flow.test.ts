import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
    const file = await client.files.create({ file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(50, SIM_MODEL))), purpose: 'batch' });
    const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { run: 'a' } });
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
