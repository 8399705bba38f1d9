/**
 * The compiled build (npm run build → dist/), as production runs it: plain node, no tsx. The
 * other tests run the TypeScript source, so this is the one that sees a bundling mistake: a
 * file found from the wrong folder, a package that breaks when bundled, an engine child still
 * started through tsx.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { chatLines, writeJsonl } from '../helpers/batch.js';
import { startMain, waitUntil, type ServerProcess } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);
const MODEL = 'sim-compiled';
const TINY = 'tiny-compiled';

/** Command lines of `pid`'s child processes, from /proc (Linux). */
function childCommands(pid: number): string[][] {
  const out: string[][] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').filter(Boolean));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('the compiled build (dist/)', { timeout: 180_000 }, () => {
  let dir: string;
  let server: ServerProcess | undefined;
  let baseUrl: string;

  beforeAll(async () => {
    // dist/ is built by the global setup (test/helpers/global-setup.ts), before any test runs it.
    dir = mkdtempSync(path.join(tmpdir(), 'bw-compiled-'));
    writeFileSync(
      path.join(dir, 'models.yaml'),
      `models:\n  - id: ${MODEL}\n    engine: sim\n  - id: ${TINY}\n    engine: embedded\n    path: builtin:tiny-cycle\n    startup_timeout_s: 60\n    options: { max_model_len: 512 }\n`,
    );
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    server = startMain('all', {
      PORT: String(port),
      DATA_DIR: path.join(dir, 'data'),
      MODELS_FILE: path.join(dir, 'models.yaml'),
      REDIS_URL: inject('redisUrl'),
      QUEUE_PREFIX: `compiled${port}`,
    });
    await waitUntil(
      async () => {
        if (server!.proc.exitCode !== null) throw new Error(`dist/main.js exited:\n${server!.output().slice(-3000)}`);
        return (await fetch(`${baseUrl}/readyz`).catch(() => null))?.status === 200;
      },
      60_000,
      'dist/main.js to answer /readyz',
    );
  });
  afterAll(async () => {
    await server?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves the dashboard and a chat completion from a compiled simulator started with plain node', async () => {
    const page = await fetch(`${baseUrl}/dashboard/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<html');
    const r = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(r.status, server!.output().slice(-2000)).toBe(200);
    expect(((await r.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content).toMatch(
      /^You said: hi/,
    );
    if (!existsSync('/proc/self/stat')) return; // the process check needs Linux's /proc
    const engines = childCommands(server!.proc.pid!).filter((c) => c.some((a) => a.endsWith('simulator.js')));
    expect(engines).toHaveLength(1);
    expect(engines[0]!.slice(0, 2)).toEqual([process.execPath, path.join(ROOT, 'dist/simulator.js')]);
    expect(engines[0]!.join(' ')).not.toContain('tsx');
  });

  it('runs the CLI through bin/batchwright.mjs (dist/cli.js): a batch submitted, watched and downloaded', async () => {
    const input = writeJsonl(dir, 'in.jsonl', chatLines(3, MODEL));
    const out = path.join(dir, 'out');
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [path.join(ROOT, 'bin/batchwright.mjs'), 'submit', input, '--out', out], {
        cwd: dir,
        env: { ...process.env, OPENAI_BASE_URL: `${baseUrl}/v1`, OPENAI_API_KEY: '', CI: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('building'); // dist/ was fresh: no rebuild
    const id = /batch_[A-Za-z0-9]+/.exec(r.stdout)![0];
    const lines = readFileSync(path.join(out, `${id}_output.jsonl`), 'utf8')
      .trim()
      .split('\n');
    expect(lines).toHaveLength(3);
  });

  it('answers from the compiled embedded engine (node-llama-cpp, loaded from node_modules)', async () => {
    const r = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: TINY, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(r.status, server!.output().slice(-2000)).toBe(200);
    expect(((await r.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content).toBe(
      'abcdefghijklmnopqrstuvwxyz',
    );
    if (!existsSync('/proc/self/stat')) return;
    const engines = childCommands(server!.proc.pid!).filter((c) => c.some((a) => a.endsWith('engine-embedded.js')));
    expect(engines).toHaveLength(1);
    expect(engines[0]!.slice(0, 2)).toEqual([process.execPath, path.join(ROOT, 'dist/engine-embedded.js')]);
  });

  it('creates and lists API keys with dist/keys.js', async () => {
    const dataDir = path.join(dir, 'keys-data');
    const env = { ...process.env, DATA_DIR: dataDir };
    const created = await run(process.execPath, [path.join(ROOT, 'dist/keys.js'), 'create', '--name', 'ci'], {
      cwd: dir,
      env,
    });
    expect(created.stdout).toMatch(/bw-/);
    const listed = await run(process.execPath, [path.join(ROOT, 'dist/keys.js'), 'list'], { cwd: dir, env });
    expect(listed.stdout).toMatch(/\bci\b/);
  });
});
