import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';

const MODEL = 'sim-model';

interface Sim {
  proc: ChildProcess;
  port: number;
  base: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  ready: Promise<Record<string, unknown>>;
}

const spawned: ChildProcess[] = [];

afterEach(async () => {
  for (const p of spawned.splice(0)) {
    if (p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
    }
  }
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function launch(args: string[]): {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Sim['exited'];
} {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'simulator/main.ts', ...args], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.push(proc);
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { proc, stdout: () => out, stderr: () => err, exited };
}

async function startSim(extra: string[] = [], waitReady = true): Promise<Sim> {
  const port = await freePort();
  const l = launch(['--port', String(port), '--model', MODEL, ...extra]);
  const ready = (async () => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const line = l
        .stdout()
        .split('\n')
        .find((s) => s.includes('"ready"'));
      if (line) return JSON.parse(line) as Record<string, unknown>;
      if (l.proc.exitCode !== null) throw new Error(`simulator exited early: ${l.stderr()}`);
      if (Date.now() > deadline) throw new Error('simulator not ready in time');
      await sleep(10);
    }
  })();
  const sim: Sim = { ...l, port, base: `http://127.0.0.1:${port}`, ready };
  if (waitReady) await ready;
  return sim;
}

async function post(sim: Sim, path: string, body: unknown, init: RequestInit = {}) {
  const res = await fetch(sim.base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, headers: res.headers };
}

interface SimStats {
  served: number;
  running: number;
  waiting: number;
  peakRunning: number;
  aborted: number;
  errors: number;
  busySlotMs: number;
  readyAtMs: number | null;
  model: string;
}

async function stats(sim: Sim): Promise<SimStats> {
  return (await (await fetch(sim.base + '/sim/stats')).json()) as SimStats;
}

function sseEvents(text: string): string[] {
  return text
    .split('\n\n')
    .filter((s) => s.length > 0)
    .map((s) => {
      expect(s.startsWith('data: ')).toBe(true);
      return s.slice('data: '.length);
    });
}

async function waitFor(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}

const chat = (content: string, extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content },
  ],
  ...extra,
});

describe('engine simulator', () => {
  it('binds at once, answers 503 during --startup-ms, then prints one ready line and serves', async () => {
    const t0 = Date.now();
    const sim = await startSim(['--startup-ms', '1500'], false);
    // Port is bound long before readiness.
    let first: Response | undefined;
    await waitFor(async () => {
      try {
        first = await fetch(sim.base + '/health');
        return true;
      } catch {
        return false;
      }
    }, 10_000);
    expect(first!.status).toBe(503);
    expect((await post(sim, '/v1/chat/completions', chat('hi'))).status).toBe(503);
    expect((await fetch(sim.base + '/v1/models')).status).toBe(503);
    expect(sim.stdout()).not.toContain('ready');

    const ready = await sim.ready;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    expect(ready).toEqual({ event: 'ready', ms: expect.any(Number), port: sim.port, model: MODEL });
    expect(ready.ms as number).toBeGreaterThanOrEqual(1500);
    const health = await fetch(sim.base + '/health');
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('');
    expect(health.headers.get('keep-alive')).toContain('timeout=65');
    // A negative check: the ready line is printed once (a second one would follow it at once).
    await sleep(50);
    expect(sim.stdout().trim().split('\n')).toHaveLength(1);
    expect((await stats(sim)).readyAtMs).toBe(ready.ms);
  });

  it('lists the served model, and exposes metrics gauges', async () => {
    const sim = await startSim(['--max-model-len', '2048']);
    const models = await (await fetch(sim.base + '/v1/models')).json();
    expect(models).toEqual({
      object: 'list',
      data: [
        {
          id: MODEL,
          object: 'model',
          created: expect.any(Number),
          owned_by: 'vllm',
          root: MODEL,
          parent: null,
          max_model_len: 2048,
        },
      ],
    });
    expect(Math.abs(models.data[0].created - Date.now() / 1000)).toBeLessThan(60);
    const metrics = await (await fetch(sim.base + '/metrics')).text();
    expect(metrics).toMatch(/^# TYPE vllm:num_requests_running gauge$/m);
    expect(metrics).toMatch(/^vllm:num_requests_running\{model_name="sim-model"\} 0(\.0)?$/m);
    expect(metrics).toMatch(/^vllm:num_requests_waiting\{model_name="sim-model"\} 0(\.0)?$/m);
    const nope = await fetch(sim.base + '/v2/whatever');
    expect(nope.status).toBe(404);
    expect(await nope.json()).toMatchObject({ object: 'error', type: 'NotFoundError', code: 404, param: null });
  });

  it('chat: deterministic text, usage, max_tokens/max_completion_tokens, sim_output_tokens, parts', async () => {
    const sim = await startSim();
    const r = await post(sim, '/v1/chat/completions', chat('hello big world'));
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      object: 'chat.completion',
      model: MODEL,
      created: expect.any(Number),
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'You said: hello big world tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10',
          },
          logprobs: null,
          finish_reason: 'stop',
        },
      ],
      // 3 words + 3 words + 1 per message
      usage: { prompt_tokens: 8, completion_tokens: 16, total_tokens: 24 },
    });
    expect(r.json.id).toMatch(/^chatcmpl-[0-9a-f]{16,}$/);

    const cut = await post(sim, '/v1/chat/completions', chat('hello big world', { max_tokens: 4 }));
    expect(cut.json.choices[0]).toMatchObject({ message: { content: 'You said: hello big' }, finish_reason: 'length' });
    expect(cut.json.usage).toEqual({ prompt_tokens: 8, completion_tokens: 4, total_tokens: 12 });

    const mct = await post(sim, '/v1/chat/completions', chat('a', { max_completion_tokens: 2 }));
    expect(mct.json.choices[0]).toMatchObject({ message: { content: 'You said:' }, finish_reason: 'length' });

    // max_tokens above the target does not cut: finish_reason stays "stop".
    const big = await post(sim, '/v1/chat/completions', chat('a', { max_tokens: 100, sim_output_tokens: 5 }));
    expect(big.json.choices[0]).toMatchObject({ message: { content: 'You said: a tok0 tok1' }, finish_reason: 'stop' });
    expect(big.json.usage.completion_tokens).toBe(5);

    // Last user message is echoed; text parts count words, image parts count 1.
    const parts = await post(sim, '/v1/chat/completions', {
      model: MODEL,
      sim_output_tokens: 6,
      messages: [
        { role: 'user', content: 'first question here' },
        { role: 'assistant', content: 'an answer' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look at' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
            { type: 'text', text: 'this' },
          ],
        },
      ],
    });
    expect(parts.json.choices[0].message.content).toBe('You said: look at this tok0');
    expect(parts.json.usage.prompt_tokens).toBe(3 + 2 + (2 + 1 + 1) + 3);
  });

  it('--output-tokens sets the default length', async () => {
    const sim = await startSim(['--output-tokens', '3']);
    const r = await post(sim, '/v1/chat/completions', chat('one two'));
    expect(r.json.choices[0].message.content).toBe('You said: one');
    expect(r.json.usage.completion_tokens).toBe(3);
  });

  it('stop strings cut before the earliest match', async () => {
    const sim = await startSim();
    const r = await post(sim, '/v1/chat/completions', chat('hello big world', { stop: ['tok2', 'big'] }));
    expect(r.json.choices[0]).toMatchObject({ message: { content: 'You said: hello ' }, finish_reason: 'stop' });
    expect(r.json.usage.completion_tokens).toBe(3);
    const s = await post(sim, '/v1/completions', { model: MODEL, prompt: 'x y', stop: 'tok1', max_tokens: 10 });
    expect(s.json.choices[0]).toMatchObject({ text: 'You said: x y tok0 ', finish_reason: 'stop' });
    expect(s.json.usage.completion_tokens).toBe(5);
    // A stop string beyond the cut does not apply.
    const n = await post(sim, '/v1/completions', { model: MODEL, prompt: 'x y', stop: ['tok9'], max_tokens: 3 });
    expect(n.json.choices[0]).toMatchObject({ text: 'You said: x', finish_reason: 'length' });
  });

  it('completions: string and array prompts', async () => {
    const sim = await startSim();
    const r = await post(sim, '/v1/completions', { model: MODEL, prompt: 'the quick  fox', max_tokens: 6 });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      object: 'text_completion',
      model: MODEL,
      choices: [{ index: 0, text: 'You said: the quick fox tok0', logprobs: null, finish_reason: 'length' }],
      usage: { prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 },
    });
    expect(r.json.id).toMatch(/^cmpl-/);
    const arr = await post(sim, '/v1/completions', { prompt: ['alpha beta', 'ignored'], sim_output_tokens: 4 });
    expect(arr.json.choices[0]).toMatchObject({ text: 'You said: alpha beta', finish_reason: 'stop' });
    expect(arr.json.usage).toEqual({ prompt_tokens: 2, completion_tokens: 4, total_tokens: 6 });
  });

  it('embeddings: shapes, unit length, determinism', async () => {
    const sim = await startSim(['--embedding-dim', '16']);
    const one = await post(sim, '/v1/embeddings', { model: MODEL, input: 'hello world' });
    expect(one.status).toBe(200);
    expect(one.json).toMatchObject({ object: 'list', model: MODEL, usage: { prompt_tokens: 2, total_tokens: 2 } });
    expect(one.json.data).toHaveLength(1);
    const v: number[] = one.json.data[0].embedding;
    expect(one.json.data[0]).toMatchObject({ object: 'embedding', index: 0 });
    expect(v).toHaveLength(16);
    expect(Math.hypot(...v)).toBeCloseTo(1, 6);

    const many = await post(sim, '/v1/embeddings', { model: MODEL, input: ['other text', 'hello world'] });
    expect(many.json.data.map((d: any) => d.index)).toEqual([0, 1]);
    expect(many.json.data[1].embedding).toEqual(v);
    expect(many.json.data[0].embedding).not.toEqual(v);
    expect(many.json.usage.prompt_tokens).toBe(4);

    const ids = await post(sim, '/v1/embeddings', { model: MODEL, input: [1, 2, 3] });
    expect(ids.json.data).toHaveLength(1);
    expect(ids.json.usage.prompt_tokens).toBe(3);
    const nested = await post(sim, '/v1/embeddings', { model: MODEL, input: [[1, 2, 3], [4]] });
    expect(nested.json.data).toHaveLength(2);
    expect(nested.json.data[0].embedding).toEqual(ids.json.data[0].embedding);
    expect(nested.json.usage.prompt_tokens).toBe(4);

    // Same input gives the same vector in another process.
    const sim2 = await startSim(['--embedding-dim', '16', '--seed', '99']);
    const again = await post(sim2, '/v1/embeddings', { model: MODEL, input: 'hello world' });
    expect(again.json.data[0].embedding).toEqual(v);
  });

  it('streams chat chunks, finish_reason on the last token, include_usage, [DONE]', async () => {
    const sim = await startSim();
    const body = chat('hello big world', { max_tokens: 5, stream: true, stream_options: { include_usage: true } });
    const r = await post(sim, '/v1/chat/completions', body);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain('text/event-stream');
    const events = sseEvents(r.text);
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    for (const c of chunks) {
      expect(c).toMatchObject({ object: 'chat.completion.chunk', model: MODEL, id: chunks[0].id });
    }
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const usageChunk = chunks.at(-1);
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toEqual({ prompt_tokens: 8, completion_tokens: 5, total_tokens: 13 });
    const tokenChunks = chunks.slice(1, -1);
    expect(tokenChunks).toHaveLength(5);
    expect(tokenChunks.map((c) => c.choices[0].delta.content)).toEqual(['You ', 'said: ', 'hello ', 'big ', 'world']);
    expect(tokenChunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(tokenChunks.at(-1).choices[0].finish_reason).toBe('length');
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeUndefined();

    // Without include_usage: no usage chunk; completions stream text pieces.
    const c = await post(sim, '/v1/completions', { prompt: 'p q', stream: true, sim_output_tokens: 3 });
    const ev = sseEvents(c.text);
    expect(ev.at(-1)).toBe('[DONE]');
    const cc = ev.slice(0, -1).map((e) => JSON.parse(e));
    expect(cc.map((x) => x.object)).toEqual(['text_completion', 'text_completion', 'text_completion']);
    expect(cc.map((x) => x.choices[0].text).join('')).toBe('You said: p');
    expect(cc.at(-1).choices[0].finish_reason).toBe('stop');
    expect(cc.every((x) => x.usage === undefined)).toBe(true);
  });

  it('respects --ttft-ms and --tokens-per-second', async () => {
    const sim = await startSim(['--ttft-ms', '300', '--tokens-per-second', '20']);
    let t = Date.now();
    const r = await post(sim, '/v1/chat/completions', chat('x', { max_tokens: 5 }));
    const nonStream = Date.now() - t;
    expect(r.status).toBe(200);
    expect(nonStream).toBeGreaterThanOrEqual(300 + 4 * 50 - 10);
    expect(nonStream).toBeLessThan(3000);

    t = Date.now();
    const res = await fetch(sim.base + '/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify(chat('x', { max_tokens: 5, stream: true })),
    });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let firstTokenAt = -1;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      if (firstTokenAt < 0 && buf.includes('"content":"You ')) firstTokenAt = Date.now() - t;
    }
    const total = Date.now() - t;
    expect(firstTokenAt).toBeGreaterThanOrEqual(290);
    expect(firstTokenAt).toBeLessThan(300 + 150);
    expect(total).toBeGreaterThanOrEqual(300 + 4 * 50 - 10);
    expect(buf.endsWith('data: [DONE]\n\n')).toBe(true);
  });

  it('returns vLLM flat errors: 400 validation, 404 unknown model', async () => {
    const sim = await startSim(['--max-model-len', '100']);
    const shape400 = { object: 'error', type: 'BadRequestError', param: null, code: 400, message: expect.any(String) };
    const bad: [string, unknown][] = [
      ['/v1/chat/completions', '{not json'],
      ['/v1/chat/completions', { model: MODEL }],
      ['/v1/chat/completions', { model: MODEL, messages: 'hi' }],
      ['/v1/completions', { model: MODEL }],
      ['/v1/embeddings', { model: MODEL }],
      ['/v1/chat/completions', chat('x', { max_tokens: 0 })],
      ['/v1/chat/completions', chat('x', { max_tokens: 1.5 })],
      ['/v1/chat/completions', chat('x', { max_tokens: '3' })],
      ['/v1/completions', { prompt: 'x', max_tokens: -1 }],
      ['/v1/chat/completions', chat('x', { temperature: 2.5 })],
      ['/v1/chat/completions', chat('x', { temperature: -0.1 })],
    ];
    for (const [path, body] of bad) {
      const r = await post(sim, path, body);
      expect({ path, body, status: r.status }).toEqual({ path, body, status: 400 });
      expect(r.json).toEqual(shape400);
    }
    const ok = await post(sim, '/v1/chat/completions', chat('x', { temperature: 2, max_tokens: 1 }));
    expect(ok.status).toBe(200);

    const long = await post(sim, '/v1/chat/completions', chat('a b c d e f', { max_tokens: 95 }));
    expect(long.status).toBe(400);
    expect(long.json.message).toBe(
      "This model's maximum context length is 100 tokens. However, you requested 106 tokens " +
        '(11 in the messages, 95 in the completion). Please reduce the length of the messages or completion.',
    );
    expect((await post(sim, '/v1/chat/completions', chat('a b c d e f', { max_tokens: 89 }))).status).toBe(200);

    const nf = await post(sim, '/v1/chat/completions', { ...chat('x'), model: 'gpt-4o' });
    expect(nf.status).toBe(404);
    expect(nf.json).toEqual({
      object: 'error',
      message: 'The model `gpt-4o` does not exist.',
      type: 'NotFoundError',
      param: null,
      code: 404,
    });
    const s = await stats(sim);
    expect(s.served).toBe(2);
  });

  it('--error-rate injects reproducible 500s from --seed', async () => {
    const pattern = async (seed: string) => {
      const sim = await startSim(['--error-rate', '0.5', '--seed', seed]);
      const codes: number[] = [];
      for (let i = 0; i < 40; i++) {
        const r = await post(sim, '/v1/completions', { prompt: 'x', max_tokens: 1 });
        codes.push(r.status);
        if (r.status === 500) {
          expect(r.json).toMatchObject({ object: 'error', type: 'InternalServerError', code: 500, param: null });
        }
      }
      const s = await stats(sim);
      expect(s.errors).toBe(codes.filter((c) => c === 500).length);
      expect(s.served).toBe(codes.filter((c) => c === 200).length);
      return codes;
    };
    const a = await pattern('7');
    expect(new Set(a)).toEqual(new Set([200, 500]));
    const fails = a.filter((c) => c === 500).length;
    expect(fails).toBeGreaterThan(5);
    expect(fails).toBeLessThan(35);
    expect(await pattern('7')).toEqual(a);
    expect(await pattern('8')).not.toEqual(a);
  });

  it('--max-concurrency queues extra requests FIFO instead of rejecting them', async () => {
    const sim = await startSim(['--max-concurrency', '3', '--ttft-ms', '150']);
    const t0 = Date.now();
    const all = Promise.all(
      Array.from({ length: 20 }, (_, i) => post(sim, '/v1/completions', { prompt: `req ${i}`, max_tokens: 1 })),
    );
    await waitFor(async () => (await stats(sim)).waiting > 0);
    const mid = await stats(sim);
    expect(mid.running).toBe(3);
    const metrics = await (await fetch(sim.base + '/metrics')).text();
    expect(metrics).toMatch(/^vllm:num_requests_running\{model_name="sim-model"\} 3(\.0)?$/m);
    expect(metrics).toMatch(/^vllm:num_requests_waiting\{model_name="sim-model"\} [1-9]\d*(\.0)?$/m);
    const results = await all;
    const elapsed = Date.now() - t0;
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(Math.ceil(20 / 3) * 150 - 20);
    const s = await stats(sim);
    expect(s).toMatchObject({ served: 20, running: 0, waiting: 0, peakRunning: 3, aborted: 0 });
    expect(s.busySlotMs).toBeGreaterThanOrEqual(20 * 150 - 50);

    const reset = (await (await fetch(sim.base + '/sim/reset', { method: 'POST' })).json()) as SimStats;
    expect(reset).toMatchObject({ served: 0, peakRunning: 0, busySlotMs: 0, errors: 0, aborted: 0 });
    expect((await stats(sim)).served).toBe(0);
  });

  it('--max-concurrency serves waiting requests in arrival order', async () => {
    const sim = await startSim(['--max-concurrency', '1', '--ttft-ms', '80']);
    const done: number[] = [];
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 6; i++) {
      pending.push(
        post(sim, '/v1/completions', { prompt: `r${i}`, max_tokens: 3 }).then((r) => {
          expect(r.json.choices[0].text).toBe(`You said: r${i}`);
          done.push(i);
        }),
      );
      // Make sure request i reached the server (running or queued) before request i+1 is sent.
      await waitFor(async () => {
        const s = await stats(sim);
        return s.running + s.waiting + s.served === i + 1;
      });
    }
    await Promise.all(pending);
    expect(done).toEqual([0, 1, 2, 3, 4, 5]);
    expect((await stats(sim)).peakRunning).toBe(1);
  });

  it('client abort mid-stream stops generation, frees the slot and counts as aborted', async () => {
    const sim = await startSim(['--max-concurrency', '1', '--tokens-per-second', '20']);
    const ac = new AbortController();
    const res = await fetch(sim.base + '/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify(chat('x', { stream: true, sim_output_tokens: 200 })),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('chat.completion.chunk');
    expect((await stats(sim)).running).toBe(1);
    ac.abort();
    await waitFor(async () => (await stats(sim)).aborted === 1);
    const s = await stats(sim);
    expect(s).toMatchObject({ running: 0, waiting: 0, served: 0, aborted: 1 });
    // The single slot is free again: a new request runs at once.
    const t = Date.now();
    const next = await post(sim, '/v1/chat/completions', chat('y', { max_tokens: 1 }));
    expect(next.status).toBe(200);
    expect(Date.now() - t).toBeLessThan(1000);
    expect((await stats(sim)).served).toBe(1);
  });

  it('client abort of a non-streaming (running or queued) request frees its slot', async () => {
    const sim = await startSim(['--max-concurrency', '1', '--ttft-ms', '30000']);
    const a1 = new AbortController();
    const a2 = new AbortController();
    const p1 = fetch(sim.base + '/v1/completions', { method: 'POST', body: '{"prompt":"a"}', signal: a1.signal }).catch(
      () => 'aborted',
    );
    await waitFor(async () => (await stats(sim)).running === 1);
    const p2 = fetch(sim.base + '/v1/completions', { method: 'POST', body: '{"prompt":"b"}', signal: a2.signal }).catch(
      () => 'aborted',
    );
    await waitFor(async () => (await stats(sim)).waiting === 1);
    a2.abort();
    await waitFor(async () => (await stats(sim)).aborted === 1);
    expect(await stats(sim)).toMatchObject({ running: 1, waiting: 0 });
    a1.abort();
    await waitFor(async () => (await stats(sim)).aborted === 2);
    expect(await stats(sim)).toMatchObject({ running: 0, waiting: 0, served: 0 });
    expect(await p1).toBe('aborted');
    expect(await p2).toBe('aborted');
  });

  it('--crash-after N serves N generation requests, then exits 1 without answering', async () => {
    const sim = await startSim(['--crash-after', '2']);
    expect((await post(sim, '/v1/completions', { prompt: 'a', max_tokens: 1 })).status).toBe(200);
    expect((await post(sim, '/v1/chat/completions', chat('b', { max_tokens: 1 }))).status).toBe(200);
    await expect(post(sim, '/v1/completions', { prompt: 'c', max_tokens: 1 })).rejects.toThrow();
    expect(await sim.exited).toEqual({ code: 1, signal: null });
  });

  it('SIGTERM exits 0 promptly', async () => {
    const sim = await startSim();
    const t = Date.now();
    sim.proc.kill('SIGTERM');
    expect(await sim.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - t).toBeLessThan(3000);
  });

  it('--ignore-sigterm survives SIGTERM, only SIGKILL stops it', async () => {
    const sim = await startSim(['--ignore-sigterm']);
    sim.proc.kill('SIGTERM');
    // Its handler has run (it says so), and the process is still there.
    await waitFor(async () => sim.stderr().includes('ignoring SIGTERM'), 10_000);
    expect(sim.proc.exitCode).toBeNull();
    expect((await fetch(sim.base + '/health')).status).toBe(200);
    sim.proc.kill('SIGKILL');
    expect(await sim.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('rejects unknown flags and bad values with exit code 2 and one stderr line', async () => {
    const cases = [
      ['--port', '1234', '--model', 'm', '--bogus'],
      ['--port', 'abc', '--model', 'm'],
      ['--model', 'm'],
      ['--port', '1234'],
      ['--port', '1234', '--model', 'm', '--error-rate', '1.5'],
      ['--port', '1234', '--model', 'm', '--max-concurrency', '-1'],
    ];
    await Promise.all(
      cases.map(async (args) => {
        const l = launch(args);
        const { code } = await l.exited;
        expect({ args, code }).toEqual({ args, code: 2 });
        expect(l.stderr().trim().split('\n')).toHaveLength(1);
        expect(l.stdout()).toBe('');
      }),
    );
  });
});
