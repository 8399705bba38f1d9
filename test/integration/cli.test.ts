import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch, writeJsonl } from '../helpers/batch.js';
import { waitUntil } from '../helpers/processes.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI as a child process (stdio pipes: not a terminal). */
function cli(
  args: string[],
  env: Record<string, string>,
  opts: {
    cwd?: string;
    until?: (stderr: string) => boolean;
    onUntil?: () => Promise<void>;
    onSpawn?: (p: ChildProcess) => void;
  } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // The compiled CLI, as the batchwright bin runs it (the global setup builds dist/).
    const proc = spawn(process.execPath, [path.join(ROOT, 'dist/cli.js'), ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, OPENAI_API_KEY: '', DATA_DIR: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    opts.onSpawn?.(proc);
    let stdout = '';
    let stderr = '';
    let fired = false;
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!fired && opts.until?.(stderr)) {
        fired = true;
        opts.onUntil?.().catch(reject);
      }
    });
    proc.on('error', reject);
    proc.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Control characters other than newline: what a log file or CI console must not get. */
// eslint-disable-next-line no-control-regex -- on purpose: the test looks for control characters
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f]/;

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('batchwright CLI against a real server and worker', { timeout: 120_000 }, () => {
  let server: TestServer;
  let env: Record<string, string>;
  let work: string;

  beforeAll(async () => {
    server = await startTestServer({ worker: true });
    env = { OPENAI_BASE_URL: `${server.baseUrl}/v1` };
    work = mkdtempSync(path.join(tmpdir(), 'bw-cli-'));
  });
  afterAll(async () => {
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('submits a batch, watches it to the end and downloads the output (exit 0)', async () => {
    const input = writeJsonl(work, 'ok.jsonl', chatLines(5, SIM_MODEL));
    const out = path.join(work, 'out-ok');
    const r = await cli(['submit', input, '--out', out, '--metadata', 'team=cli', '--interval', '200'], env);
    expect(r.code, r.stderr).toBe(0);
    const id = /batch_[A-Za-z0-9]+/.exec(r.stdout)![0];
    const lines = readFileSync(path.join(out, `${id}_output.jsonl`), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.custom_id).sort()).toEqual(['req-0', 'req-1', 'req-2', 'req-3', 'req-4']);
    expect(lines.every((l) => l.response.status_code === 200)).toBe(true);
    expect(existsSync(path.join(out, `${id}_error.jsonl`))).toBe(false);
    expect(r.stdout).toContain(`batch ${id} completed`);
    expect(r.stdout).toContain('5 completed, 0 failed');
    // Not a terminal: plain lines, no bar, no escape codes.
    expect(r.stderr).toMatch(new RegExp(`${id} completed 5/5`));
    expect(CONTROL.test(r.stdout + r.stderr)).toBe(false);
    const batch = await server.client.batches.retrieve(id);
    expect(batch.metadata).toEqual({ team: 'cli' });
  });

  it('prints every validation problem with its line number and exits 4', async () => {
    const good = JSON.parse(chatLines(1, SIM_MODEL).trim());
    const text =
      [
        JSON.stringify(good),
        '{not json',
        JSON.stringify({ ...good, custom_id: 'x', method: 'GET' }),
        JSON.stringify(good),
      ].join('\n') + '\n';
    const r = await cli(['submit', writeJsonl(work, 'bad.jsonl', text), '--out', work, '--interval', '200'], env);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/failed: the input file has \d+ problems; no request ran/);
    expect(r.stderr).toMatch(/line 2: invalid_json_line/);
    expect(r.stderr).toMatch(/line 3: invalid_method \(method\)/);
    expect(r.stderr).toMatch(/line 4: duplicate_custom_id \(custom_id\)/);
    expect(CONTROL.test(r.stderr)).toBe(false);
  });

  it('exits 1 when the batch completed but some requests failed, and writes the error file', async () => {
    // The simulator, like vLLM, answers 400 to max_tokens < 1: one request fails, two succeed.
    const text = chatLines(3, SIM_MODEL, (i) => (i === 1 ? { max_tokens: -5 } : {}));
    const out = path.join(work, 'out-partial');
    const r = await cli(['submit', writeJsonl(work, 'partial.jsonl', text), '--out', out, '--interval', '200'], env);
    const id = /batch_[A-Za-z0-9]+/.exec(r.stdout)?.[0];
    expect(id, r.stderr).toBeTruthy();
    const batch = await server.client.batches.retrieve(id!);
    expect(batch.request_counts).toMatchObject({ total: 3, completed: 2, failed: 1 });
    expect(r.code).toBe(1);
    const errors = readFileSync(path.join(out, `${id}_error.jsonl`), 'utf8')
      .trim()
      .split('\n');
    expect(errors).toHaveLength(batch.request_counts!.failed);
    expect(r.stderr).toContain('requests failed: see the error file');
  });

  it('with --no-watch prints only the batch id', async () => {
    const r = await cli(['submit', writeJsonl(work, 'nw.jsonl', chatLines(2, SIM_MODEL)), '--no-watch'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^batch_[A-Za-z0-9]+$/);
    await waitForBatch(server.client, r.stdout.trim(), ['completed']);
  });

  it('lists batches and models, downloads a finished batch', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(2, SIM_MODEL)], 'l.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitForBatch(server.client, b.id, ['completed']);
    const listed = await cli(['list', '--limit', '100'], env);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`${b.id}\\s+completed\\s+${SIM_MODEL}\\s+2/2`));
    const models = await cli(['models'], env);
    expect(models.code, models.stderr).toBe(0);
    expect(models.stdout).toMatch(new RegExp(`${SIM_MODEL}\\s+(ready|loading|unloaded|sleeping)\\s+sim`));
    const out = path.join(work, 'dl');
    const dl = await cli(['download', b.id, '--out', out], env);
    expect(dl.code, dl.stderr).toBe(0);
    expect(
      readFileSync(path.join(out, `${b.id}_output.jsonl`), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(2);
  });

  it("prints an engine's log through the operator API", async () => {
    // The engine must have run (and printed) on the worker first.
    const file = await server.client.files.create({
      file: new File([chatLines(1, SIM_MODEL)], 'log.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitForBatch(server.client, b.id, ['completed']);
    type W = { worker_id?: string; workerId?: string; id?: string };
    let w: W | undefined;
    await waitUntil(
      async () => {
        w = ((await (await fetch(`${server.baseUrl}/ops/workers`)).json()) as { data: W[] }).data[0];
        return w !== undefined;
      },
      30_000,
      'a worker in /ops/workers',
    );
    const workerId = (w!.worker_id ?? w!.workerId ?? w!.id)!;
    const r = await cli(['logs', workerId, SIM_MODEL, '--tail', '50'], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
    const unknown = await cli(['logs', workerId, 'no-such-model'], env);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toContain('404 model_not_found');
  });

  it('exports starred answers as JSONL', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(2, SIM_MODEL)], 's.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    await waitForBatch(server.client, b.id, ['completed']);
    const star = await fetch(`${server.baseUrl}/ops/batches/${b.id}/stars/req-1`, { method: 'PUT' });
    expect(star.status).toBe(200);
    const dest = path.join(work, 'starred.jsonl');
    const r = await cli(['export-starred', '--batch', b.id, '-o', dest], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = readFileSync(dest, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines[0])).toContain('question number 1');
  });

  it('explains a 404 in one line and exits 5', async () => {
    const r = await cli(['download', 'batch_doesnotexist0000000000'], env);
    expect(r.code).toBe(5);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^batchwright: the server answered 404 batch_not_found: /);
  });

  it('reports a usage error with exit 2', async () => {
    const missing = await cli(['submit', path.join(work, 'nope.jsonl')], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file');
    const bad = await cli(['list', '--limit', 'many'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--limit must be a positive integer');
  });

  it('says in one line which URL it could not reach, and exits 3', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/v1`;
    const r = await cli(['list'], { OPENAI_BASE_URL: url });
    expect(r.code).toBe(3);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`cannot reach the server at ${url} (ECONNREFUSED)`);
    expect(lines[0]).toContain('OPENAI_BASE_URL');
  });
});

describe('batchwright CLI while a batch waits (no worker)', { timeout: 120_000 }, () => {
  let server: TestServer;
  let env: Record<string, string>;
  let work: string;

  beforeAll(async () => {
    server = await startTestServer({ worker: false });
    env = { OPENAI_BASE_URL: `${server.baseUrl}/v1` };
    work = mkdtempSync(path.join(tmpdir(), 'bw-cli-wait-'));
  });
  afterAll(async () => {
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('says why the batch waits, and exits 4 once it is cancelled', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(3, SIM_MODEL)], 'w.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const r = await cli(['watch', b.id, '--interval', '200'], env, {
      until: (stderr) => /waiting: /.test(stderr),
      onUntil: async () => void (await server.client.batches.cancel(b.id)),
    });
    // The operator API's waiting_reason (open mode: no admin key needed), or the model's state.
    expect(r.stderr).toMatch(
      new RegExp(`waiting: (no live worker serves model ${SIM_MODEL}|model ${SIM_MODEL} is not loaded)`),
    );
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`batch ${b.id} cancelled`);
    expect(CONTROL.test(r.stderr)).toBe(false);
  });

  it('on Ctrl-C stops watching with exit 130 and leaves the batch running', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(2, SIM_MODEL)], 'i.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    let child: ChildProcess | undefined;
    const r = await cli(['watch', b.id, '--interval', '200'], env, {
      onSpawn: (p) => (child = p),
      until: (stderr) => /waiting: /.test(stderr),
      onUntil: async () => void child!.kill('SIGINT'),
    });
    expect(r.code).toBe(130);
    expect(r.stderr).toContain(`stopped watching; ${b.id} keeps running on the server`);
    expect((await server.client.batches.retrieve(b.id)).status).toBe('in_progress');
    await server.client.batches.cancel(b.id);
  });

  it('cancels a batch', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(2, SIM_MODEL)], 'c.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const r = await cli(['cancel', b.id], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${b.id} (cancelling|cancelled)$`, 'm'));
    await waitForBatch(server.client, b.id, ['cancelled']);
  });

  it(
    'manages API keys in DATA_DIR, and then a call without a key gets a one-line 401 (exit 3)',
    { timeout: 180_000 },
    async () => {
      const created = await cli(
        ['keys', 'create', '--name', 'ci', '--project', 'team-a', '--data-dir', server.dataDir],
        env,
      );
      expect(created.code, created.stderr).toBe(0);
      const secret = created.stdout.trim();
      expect(secret).toMatch(/^bw-[A-Za-z0-9]{43}$/);
      const id = /created (key_[A-Za-z0-9]+)/.exec(created.stderr)![1]!;
      const listed = await cli(['keys', 'list'], { ...env, DATA_DIR: server.dataDir });
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toMatch(new RegExp(`${id}\\s+bw-\\S+\\s+ci\\s+team-a\\s+no`));
      expect(listed.stdout).not.toContain(secret);

      const denied = await cli(['list'], env);
      expect(denied.code).toBe(3);
      expect(denied.stderr.trim().split('\n')).toHaveLength(1);
      expect(denied.stderr).toContain('set OPENAI_API_KEY');
      const allowed = await cli(['list'], { ...env, OPENAI_API_KEY: secret });
      expect(allowed.code, allowed.stderr).toBe(0);

      const revoked = await cli(['keys', 'revoke', id, '--data-dir', server.dataDir], env);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(revoked.stdout).toContain(`revoked ${id}`);
      const missingDir = await cli(['keys', 'list', '--data-dir', path.join(work, 'nowhere')], env);
      expect(missingDir.code).toBe(2);
      expect(missingDir.stderr).toContain('no database at');
      // First set-up: --create-db makes the database, so the server can start with a key.
      const fresh = path.join(work, 'fresh-data');
      const first = await cli(
        ['keys', 'create', '--name', 'admin', '--admin', '--create-db', '--data-dir', fresh],
        env,
      );
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).toContain(', admin)');
      expect(existsSync(path.join(fresh, 'db.sqlite'))).toBe(true);
    },
  );

  // Runs after the keys test: the server now has keys, so /ops needs an admin key.
  it("falls back to the model's state when the key may not read the operator API", async () => {
    const proj = await cli(
      ['keys', 'create', '--name', 'user', '--project', 'team-b', '--data-dir', server.dataDir],
      env,
    );
    expect(proj.code, proj.stderr).toBe(0);
    const userKey = proj.stdout.trim();
    let batchId = '';
    const watched = await cli(
      ['submit', writeJsonl(work, 'fb.jsonl', chatLines(2, SIM_MODEL)), '--interval', '200', '--out', work],
      { ...env, OPENAI_API_KEY: userKey },
      {
        until: (stderr) => {
          batchId ||= /created (batch_[A-Za-z0-9]+)/.exec(stderr)?.[1] ?? '';
          return /waiting: /.test(stderr);
        },
        onUntil: async () => {
          const res = await fetch(`${server.baseUrl}/v1/batches/${batchId}/cancel`, {
            method: 'POST',
            headers: { authorization: `Bearer ${userKey}` },
          });
          expect(res.status).toBe(200);
        },
      },
    );
    expect(watched.stderr).toMatch(new RegExp(`waiting: model ${SIM_MODEL} is not loaded: waiting for a worker`));
    expect(watched.code, watched.stderr).toBe(4);
  }, 120_000);
});
