/**
 * One conformance suite, run over every engine kind present here, each through a real
 * ModelManager (and one small batch through the Batch API):
 *   sim       always (our simulator)
 *   embedded  always (node-llama-cpp is a dependency), on the generated tiny "cycle" model
 *   llamacpp  when a llama-server binary exists (scripts/build-llama-server.sh, $LLAMA_SERVER or
 *             PATH), on the same tiny model; else skipped with the reason
 *   vllm      when a `vllm` binary is on PATH ($VLLM_TEST_MODEL, default facebook/opt-125m); else skipped
 *
 * What differs between engines, and what the server normalises (N) or passes through (P):
 * | aspect                        | sim                          | embedded                 | llamacpp                                   | vllm           |
 * |-------------------------------|------------------------------|--------------------------|--------------------------------------------|----------------|
 * | answer text (P)               | "You said: <prompt> tok0 …"  | exactly the alphabet     | exactly the alphabet                       | model's own    |
 * | completion_tokens, full (P)   | output_tokens (16)           | 26 (end token not counted)| 27: llama-server counts the end token     | model's own    |
 * | finish_reason (P)             | stop / length                | stop / length            | stop / length                              | stop / length  |
 * | stop_reason field (P)         | present                      | present                  | absent                                     | present        |
 * | extra fields (P)              | —                            | —                        | timings, system_fingerprint                | —              |
 * | context per request           | max_model_len                | max_model_len            | -c / -np = max_model_len (n_ctx_slot)      | max_model_len  |
 * | error body (N)                | vLLM flat {object:"error"}   | vLLM flat                | {error:{code,message,type}}                | vLLM flat      |
 * |   → toOpenAIErrorBody         | {error:{message,type,param,code}} for all of them (what batch error lines and the proxy return)           |
 * | max_tokens: -1 (P)            | 400                          | 400                      | 200: -1 means no limit (BAD_MAX_TOKENS)    | 400            |
 * | messages not a list (P)       | 400                          | 400                      | 400                                        | 400            |
 * Exact-text assertions only for the tiny-model engines; usage must always add up
 * (prompt + completion = total).
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelSchema, type ModelConfig } from '../../src/config/models.js';
import { toOpenAIErrorBody } from '../../src/domain/engine-error-body.js';
import { llamaServerBinary } from '../../src/engines/llamacpp.js';
import { ModelManager, type EngineHandle } from '../../src/engines/model-manager.js';
import { ensureTinyModel } from '../../src/engines/tiny-model.js';
import { createLogger } from '../../src/log/logger.js';
import { startTestServer } from '../helpers/app.js';
import { readLinesOf, waitForBatch, writeJsonl } from '../helpers/batch.js';

const ABC = 'abcdefghijklmnopqrstuvwxyz';
const MODEL = 'suite-model';
type Json = Record<string, any>;
type Kind = 'sim' | 'embedded' | 'llamacpp' | 'vllm';

function onPath(bin: string): boolean {
  if (bin.includes('/')) return existsSync(bin);
  return spawnSync('sh', ['-c', `command -v "${bin}"`], { stdio: 'ignore' }).status === 0;
}

interface EngineCase {
  kind: Kind;
  /** Why it is skipped, or null when it runs. */
  skip: string | null;
  /** The tiny cycle model: exact text. */
  tiny: boolean;
  /** models.yaml entry (without id); `{gguf}` in path is replaced by the tiny model's file. */
  model: Record<string, unknown>;
}

const llamaBin = llamaServerBinary({});
const CASES: EngineCase[] = [
  { kind: 'sim', skip: null, tiny: false, model: { engine: 'sim', startup_timeout_s: 30 } },
  {
    kind: 'embedded',
    skip: null,
    tiny: true,
    model: {
      engine: 'embedded',
      path: '{gguf}',
      startup_timeout_s: 60,
      options: { max_num_seqs: 4, max_model_len: 512 },
    },
  },
  {
    kind: 'llamacpp',
    skip: onPath(llamaBin) ? null : `no llama-server binary (${llamaBin}); build it with: npm run build:llama`,
    tiny: true,
    model: {
      engine: 'llamacpp',
      path: '{gguf}',
      startup_timeout_s: 60,
      options: { max_num_seqs: 4, max_model_len: 512 },
    },
  },
  {
    kind: 'vllm',
    skip: onPath('vllm') ? null : 'no `vllm` binary on PATH',
    tiny: false,
    model: {
      engine: 'vllm',
      path: process.env['VLLM_TEST_MODEL'] ?? 'facebook/opt-125m',
      startup_timeout_s: 600,
      options: { max_num_seqs: 8, max_model_len: 1024 },
    },
  },
];

const present = CASES.filter((c) => c.skip === null);
for (const c of CASES.filter((c) => c.skip !== null)) {
  console.log(`engine-suite: skipping ${c.kind}: ${c.skip}`);
  describe.skip(`engine ${c.kind} (skipped: ${c.skip})`, () => {
    it('conformance', () => undefined);
  });
}

let dir: string;
let gguf: string;
beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'engine-suite-'));
  gguf = await ensureTinyModel(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configFor(c: EngineCase, id: string): ModelConfig {
  return modelSchema.parse({ id, ...c.model, ...(c.model['path'] === '{gguf}' && { path: gguf }) });
}

describe.each(present)('engine $kind', (c) => {
  let mm: ModelManager;
  let h: EngineHandle;

  beforeAll(async () => {
    mm = new ModelManager({
      models: [configFor(c, MODEL)],
      logDir: path.join(dir, `logs-${c.kind}`),
      log: createLogger('silent'),
      stopTimeoutMs: 2_000,
      restartBackoffMs: 20,
    });
    h = await mm.ensureReady(MODEL);
  }, 620_000);
  afterAll(async () => {
    await mm?.shutdown();
  });

  async function post(p: string, body: unknown): Promise<{ status: number; raw: Buffer; json: Json }> {
    const res = await fetch(`${h.baseUrl}${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const raw = Buffer.from(await res.arrayBuffer());
    let json: Json = {};
    try {
      json = JSON.parse(raw.toString()) as Json;
    } catch {
      /* not JSON */
    }
    return { status: res.status, raw, json };
  }
  const chat = (extra: Json = {}) =>
    post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'Say the alphabet' }], ...extra });

  async function sse(p: string, body: Json): Promise<Json[]> {
    const res = await fetch(`${h.baseUrl}${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, ...body, stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await res.text())
      .split(/\r?\n\r?\n/)
      .map((e) => e.trim())
      .filter((e) => e.startsWith('data:'))
      .map((e) => e.slice(5).trim());
    expect(events.at(-1)).toBe('[DONE]');
    return events.slice(0, -1).map((e) => JSON.parse(e) as Json);
  }

  function expectUsage(u: Json | undefined): void {
    expect(u).toBeDefined();
    expect(u!.prompt_tokens).toBeGreaterThan(0);
    expect(u!.completion_tokens).toBeGreaterThan(0);
    expect(u!.total_tokens).toBe(u!.prompt_tokens + u!.completion_tokens);
  }

  it('is ready and lists its model', async () => {
    expect(mm.info(MODEL)).toMatchObject({ engine: c.kind, state: 'ready', restarts: 0 });
    const models = (await (await fetch(`${h.baseUrl}/v1/models`)).json()) as Json;
    expect(models.data.map((m: Json) => m.id)).toContain(MODEL);
  });

  it('answers a chat completion, with usage', async () => {
    const r = await chat();
    expect(r.status).toBe(200);
    expect(r.json.object).toBe('chat.completion');
    const choice = r.json.choices[0];
    expect(choice.message.role).toBe('assistant');
    expect(choice.finish_reason).toBe('stop');
    if (c.tiny) expect(choice.message.content).toBe(ABC);
    if (c.kind === 'sim') expect(choice.message.content).toMatch(/^You said: Say the alphabet/);
    expectUsage(r.json.usage);
    if (c.kind === 'embedded') expect(r.json.usage.completion_tokens).toBe(26);
    if (c.kind === 'llamacpp') expect(r.json.usage.completion_tokens).toBe(27); // the end token counts
  });

  it('streams a chat completion', async () => {
    const chunks = await sse('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'Say the alphabet' }],
      stream_options: { include_usage: true },
    });
    for (const ch of chunks) expect(ch.object).toBe('chat.completion.chunk');
    const text = chunks.flatMap((ch) => (ch.choices ?? []).map((x: Json) => x.delta?.content ?? '')).join('');
    if (c.tiny) expect(text).toBe(ABC);
    else expect(text.length).toBeGreaterThan(0);
    const finishes = chunks.flatMap((ch) => (ch.choices ?? []).map((x: Json) => x.finish_reason)).filter(Boolean);
    expect(finishes).toEqual(['stop']);
    expectUsage([...chunks].reverse().find((ch) => ch.usage)?.usage);
  });

  it('answers a text completion, streaming or not', async () => {
    const r = await post('/v1/completions', { model: MODEL, prompt: 'The alphabet:\n', temperature: 0 });
    expect(r.status).toBe(200);
    expect(r.json.object).toBe('text_completion');
    if (c.tiny) expect(r.json.choices[0].text).toBe(ABC);
    expectUsage(r.json.usage);
    const chunks = await sse('/v1/completions', {
      prompt: 'The alphabet:\n',
      max_tokens: 7,
      stream_options: { include_usage: true },
    });
    const text = chunks.flatMap((ch) => (ch.choices ?? []).map((x: Json) => x.text ?? '')).join('');
    if (c.tiny) expect(text).toBe('abcdefg');
    const usage = [...chunks].reverse().find((ch) => ch.usage)?.usage;
    expectUsage(usage);
    expect(usage.completion_tokens).toBe(7);
  });

  it('honours stop and max_tokens (finish_reason length)', async () => {
    const cut = await chat({ max_tokens: 5 });
    expect(cut.status).toBe(200);
    expect(cut.json.choices[0].finish_reason).toBe('length');
    expect(cut.json.usage.completion_tokens).toBe(5);
    expectUsage(cut.json.usage);
    if (c.tiny) expect(cut.json.choices[0].message.content).toBe('abcde');

    const stopAt = c.kind === 'sim' ? 'alphabet' : c.tiny ? 'j' : null;
    if (stopAt) {
      const s = await chat({ stop: [stopAt] });
      expect(s.status).toBe(200);
      expect(s.json.choices[0].finish_reason).toBe('stop');
      expect(s.json.choices[0].message.content).toBe(c.tiny ? 'abcdefghi' : 'You said: Say the ');
      expectUsage(s.json.usage);
    }
  });

  it("rejects bad parameters with a 400 that toOpenAIErrorBody turns into OpenAI's envelope", async () => {
    const nullOrString = (v: unknown) => v === null || typeof v === 'string';
    const expectEnvelope = (r: { status: number; raw: Buffer }, message: RegExp) => {
      expect(r.status).toBe(400);
      const env = toOpenAIErrorBody(r.status, r.raw);
      expect(env).toEqual({
        error: {
          message: expect.any(String),
          type: 'invalid_request_error',
          param: expect.toSatisfy(nullOrString),
          code: expect.toSatisfy(nullOrString),
        },
      });
      expect(env.error.message).toMatch(message);
    };
    const neg = await chat({ max_tokens: -1 });
    if (c.kind === 'llamacpp') {
      // BAD_MAX_TOKENS: llama-server reads -1 as "no limit" (n_predict -1) and answers; passed through, not normalised.
      expect(neg.status).toBe(200);
      expect(neg.json.choices[0].message.content).toBe(ABC);
    } else {
      expectEnvelope(neg, /max_tokens/);
    }
    expectEnvelope(await post('/v1/chat/completions', { model: MODEL, messages: 'not a list' }), /messages/i);
  });

  it('serves 4 concurrent requests', async () => {
    const rs = await Promise.all(Array.from({ length: 4 }, (_, i) => chat({ max_tokens: i === 3 ? 8 : undefined })));
    for (const [i, r] of rs.entries()) {
      expect(r.status).toBe(200);
      expectUsage(r.json.usage);
      if (c.tiny) expect(r.json.choices[0].message.content).toBe(i === 3 ? 'abcdefgh' : ABC);
    }
  });

  it('is restarted after a SIGKILL and the next request succeeds', async () => {
    const pid = mm.info(MODEL).pid!;
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    while (mm.info(MODEL).state !== 'failed' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(mm.info(MODEL).state).toBe('failed');
    h = await mm.ensureReady(MODEL);
    expect(mm.info(MODEL)).toMatchObject({ state: 'ready', restarts: 1 });
    expect(mm.info(MODEL).pid).not.toBe(pid);
    const r = await chat();
    expect(r.status).toBe(200);
    if (c.tiny) expect(r.json.choices[0].message.content).toBe(ABC);
  }, 620_000);

  it('completes a batch of 5 through the Batch API', async () => {
    const id = `batch-${c.kind}`;
    const m = { ...c.model, ...(c.model['path'] === '{gguf}' && { path: gguf }) };
    const server = await startTestServer({ worker: true, modelsYaml: JSON.stringify({ models: [{ id, ...m }] }) }); // YAML ⊇ JSON
    try {
      const { client } = server;
      const lines = Array.from({ length: 5 }, (_, i) =>
        JSON.stringify({
          custom_id: `req-${i}`,
          method: 'POST',
          url: '/v1/chat/completions',
          body: {
            model: id,
            messages: [{ role: 'user', content: `question ${i}` }],
            ...(i % 2 === 0 && { max_tokens: 5 }),
          },
        }),
      );
      const input = writeJsonl(mkdtempSync(path.join(tmpdir(), 'bw-suite-in-')), 'in.jsonl', lines.join('\n') + '\n');
      const file = await client.files.create({ file: createReadStream(input), purpose: 'batch' });
      const created = await client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      const done = await waitForBatch(client, created.id, ['completed', 'failed'], 120_000);
      expect(done.status).toBe('completed');
      expect(done.request_counts).toEqual({ total: 5, completed: 5, failed: 0 });
      const out = await readLinesOf(client, done.output_file_id);
      expect(out).toHaveLength(5);
      for (const l of out) {
        const i = Number(l.custom_id.slice(4));
        expect(l.response.status_code).toBe(200);
        const choice = l.response.body.choices[0];
        if (i % 2 === 0) expect(choice.finish_reason).toBe('length');
        if (c.tiny) expect(choice.message.content).toBe(i % 2 === 0 ? 'abcde' : ABC);
        expectUsage(l.response.body.usage);
      }
    } finally {
      await server.close();
    }
  }, 180_000);
});
