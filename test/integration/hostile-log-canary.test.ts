/**
 * Log canary (extends the one in batch-flow.test.ts): secret strings go through every surface
 * (uploads, batch lines run by a worker, interactive chat/completions/embeddings streaming and
 * not, errors that echo bad input, valid and invalid API keys in every header form) and no log
 * line carries any of them, at the default level (info) nor at debug.
 */
import { afterEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { createKey } from '../../src/auth/keys-admin.js';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';
import { readLinesOf, waitForBatch } from '../helpers/batch.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** Every secret, distinct, so a failure names the surface that leaked. */
const S = {
  prompt: 'canary-prompt-b71e0c',
  batchPrompt: 'canary-batchline-44fa19',
  fileName: 'canary-filename-9d03aa',
  fileBody: 'canary-filebody-e1c5b2',
  badLine: 'canary-badline-07c3de',
  unknownParam: 'canary-param-5a8f21',
  unknownModel: 'canary-model-c6d9e4',
  invalidJson: 'canary-json-2f7b80',
  metadataKey: 'canary-metakey-8e1d55',
  badBearer: 'sk-canary-badbearer-1a2b3c',
  badRaw: 'sk-canary-rawauth-4d5e6f',
  badXApiKey: 'sk-canary-xapikey-7a8b9c',
  queryKey: 'sk-canary-querykey-0e9d8c',
  engineErr: 'canary-engine-error-31f0aa',
};

const chatLine = (id: string, content: string) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: SIM_MODEL, messages: [{ role: 'user', content }] },
  });

async function exercise(srv: TestServer): Promise<{ goodKey: string }> {
  const { secret: goodKey } = createKey(srv.app.deps.db, { name: 'canary', project: 'canary' });
  const client = new OpenAI({ baseURL: `${srv.baseUrl}/v1`, apiKey: goodKey, maxRetries: 0 });
  const auth = { authorization: `Bearer ${goodKey}` };

  // Uploads: a secret file name and secret bytes, then a batch of secret prompts run by the worker.
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append(
    'file',
    new Blob([
      Array.from({ length: 4 }, (_, i) => chatLine(`r${i}`, `${S.batchPrompt} ${S.fileBody}`)).join('\n') + '\n',
    ]),
    `${S.fileName}.jsonl`,
  );
  const up = await fetch(`${srv.baseUrl}/v1/files`, { method: 'POST', body: form, headers: auth });
  expect(up.status).toBe(200);
  const file = (await up.json()) as { id: string; filename: string };
  expect(file.filename).toContain(S.fileName);
  const batch = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { [S.metadataKey]: 'v' },
  });
  const done = await waitForBatch(client, batch.id, ['completed', 'failed'], 120_000);
  expect(done.status).toBe('completed');
  const out = await readLinesOf(client, done.output_file_id);
  // The simulator echoes the prompt: a logged completion would show the canary too.
  expect(out[0]!.response.body.choices[0].message.content).toContain(S.batchPrompt);

  // A batch whose lines are broken: validation messages quote the line (returned, never logged).
  const badForm = new FormData();
  badForm.append('purpose', 'batch');
  badForm.append(
    'file',
    new Blob([
      `{"custom_id":"x","oops":"${S.badLine}"\n${chatLine('y', S.badLine)}\n{"custom_id":"y","method":"GET","url":"${S.badLine}","body":{"model":"${S.badLine}"}}\n`,
    ]),
    'bad.jsonl',
  );
  const badUp = (await (
    await fetch(`${srv.baseUrl}/v1/files`, { method: 'POST', body: badForm, headers: auth })
  ).json()) as { id: string };
  const badBatch = await client.batches.create({
    input_file_id: badUp.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  const failed = await waitForBatch(client, badBatch.id, ['failed'], 60_000);
  expect(JSON.stringify(failed.errors)).toContain(S.badLine);

  // Interactive: chat non-streaming and streaming, completions, embeddings.
  const chat = await client.chat.completions.create({
    model: SIM_MODEL,
    messages: [{ role: 'user', content: S.prompt }],
  });
  expect(chat.choices[0]!.message.content).toContain(S.prompt);
  const stream = await client.chat.completions.create({
    model: SIM_MODEL,
    messages: [{ role: 'user', content: S.prompt }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? '';
  expect(streamed).toContain(S.prompt);
  await client.completions.create({ model: SIM_MODEL, prompt: S.prompt });
  await client.embeddings.create({ model: SIM_MODEL, input: [S.prompt] });

  // Errors that echo input back to the client.
  const post = (url: string, body: string, headers: Record<string, string> = auth) =>
    fetch(`${srv.baseUrl}${url}`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', ...headers },
    });
  const unknown = await post(
    '/v1/batches',
    JSON.stringify({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      [S.unknownParam]: 1,
    }),
  );
  expect(unknown.status).toBe(400);
  expect(await unknown.text()).toContain(S.unknownParam);
  const noModel = await post(
    '/v1/chat/completions',
    JSON.stringify({ model: S.unknownModel, messages: [{ role: 'user', content: S.prompt }] }),
  );
  expect(noModel.status).toBe(404);
  expect(await noModel.text()).toContain(S.unknownModel);
  const badJson = await post(
    '/v1/chat/completions',
    `{"model":"${SIM_MODEL}","messages":[{"content":"${S.invalidJson}"`,
  );
  expect(badJson.status).toBe(400);
  const badJsonBatch = await post('/v1/batches', `{"input_file_id":"${S.invalidJson}",}`);
  expect(badJsonBatch.status).toBe(400);
  // An engine 4xx that quotes the request (the simulator's own validation).
  const engine4xx = await post('/v1/chat/completions', JSON.stringify({ model: SIM_MODEL, messages: S.engineErr }));
  expect(engine4xx.status).toBeGreaterThanOrEqual(400);

  // Keys: a wrong Bearer key, a header without "Bearer", an x-api-key, each on a data route.
  const badHeaders: Record<string, string>[] = [
    { authorization: `Bearer ${S.badBearer}` },
    { authorization: S.badRaw },
    { 'x-api-key': S.badXApiKey },
  ];
  for (const headers of badHeaders) {
    const r = await fetch(`${srv.baseUrl}/v1/files`, { headers });
    expect(r.status).toBe(401);
    const chatWithBadKey = await post(
      '/v1/chat/completions',
      JSON.stringify({ model: SIM_MODEL, messages: [{ role: 'user', content: S.prompt }] }),
      headers,
    );
    expect(chatWithBadKey.status).toBe(401);
  }
  // Some clients put the key in the query string.
  expect((await fetch(`${srv.baseUrl}/v1/models?api_key=${S.queryKey}`, { headers: auth })).status).toBe(200);
  expect((await fetch(`${srv.baseUrl}/v1/files?key=${S.queryKey}`)).status).toBe(401);
  return { goodKey };
}

function expectNoSecrets(logs: Record<string, unknown>[], secrets: Record<string, string>): void {
  const all = logs.map((l) => JSON.stringify(l));
  for (const [surface, secret] of Object.entries(secrets)) {
    const hit = all.find((l) => l.includes(secret));
    expect(hit, `${surface} leaked into the log: ${hit?.slice(0, 400)}`).toBeUndefined();
  }
}

describe('logs (canary)', () => {
  for (const level of ['info', 'debug'] as const) {
    it(`carry no API key, prompt, completion or echoed input at ${level}`, async () => {
      server = await startTestServer({ worker: true, captureLogs: true, logLevel: level });
      const { goodKey } = await exercise(server);
      expect(server.logs.length).toBeGreaterThan(level === 'debug' ? 30 : 5);
      if (level === 'info') expect(server.logs.every((l) => (l.level as number) >= 30)).toBe(true);
      else expect(server.logs.some((l) => l.level === 20)).toBe(true);
      expectNoSecrets(server.logs, { ...S, goodKey });
      // The scan can fail: a planted secret is found.
      expect(() => expectNoSecrets([...server!.logs, { msg: `x ${S.prompt} y` }], { prompt: S.prompt })).toThrow(
        /prompt leaked/,
      );
      // The refusals were logged (as status codes), so the scan looked at the lines that handled the secrets.
      const statuses = server.logs.map((l) => (l.res as { statusCode?: number } | undefined)?.statusCode);
      expect(statuses).toContain(401);
      expect(statuses).toContain(400);
      // The lines stay useful: request ids, and the 401s and 4xx are there as facts, not text.
      expect(server.logs.some((l) => typeof l.reqId === 'string')).toBe(true);
    }, 240_000);
  }
});
