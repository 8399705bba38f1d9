/**
 * bench/proxy.ts end to end in its --quick form (it starts its own Redis, API, workers and
 * engines as child processes), and the x-batchwright-overhead-ms header it reports on.
 * Presence and format only: no timing thresholds (CI machines vary).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OVERHEAD_HEADER } from '../../src/api/proxy/upstream-call.js';
import { SIM_MODEL, startTestServer, type TestServer } from '../helpers/app.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OVERHEAD_RE = /^\d+\.\d{3}$/;

function run(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/proxy.ts', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

describe('npm run bench:proxy -- --quick', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'bw-bench-smoke-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('exits 0 and writes JSON with P1-P4 as finite numbers', { timeout: 120_000 }, async () => {
    const file = path.join(dir, 'proxy.json');
    const r = await run(['--quick', '--json', file], 90_000);
    expect(r.signal, r.output).toBeNull();
    expect(r.code, r.output).toBe(0);
    const json = JSON.parse(readFileSync(file, 'utf8')) as {
      quick: boolean;
      machine: { cpuCount: number; node: string };
      metrics: Record<string, { value: unknown; must: unknown; target: unknown; pass: unknown }>;
    };
    expect(json.quick).toBe(true);
    expect(json.machine.cpuCount).toBeGreaterThan(0);
    expect(json.machine.node).toBe(process.version);
    for (const id of ['P1', 'P2', 'P3', 'P4']) {
      const m = json.metrics[id];
      expect(m, id).toBeDefined();
      expect(Number.isFinite(m!.value), `${id} = ${String(m!.value)}`).toBe(true);
      expect(typeof m!.must).toBe('number');
      expect(typeof m!.target).toBe('number');
      expect(typeof m!.pass).toBe('boolean');
    }
    expect(json.metrics.P4!.value as number).toBeGreaterThan(0);
  });
});

describe(`${OVERHEAD_HEADER} response header`, () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ worker: true });
  });
  afterAll(async () => {
    await server?.close();
  });

  const post = (body: unknown) =>
    fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const messages = [{ role: 'user', content: 'hello' }];

  function expectOverhead(value: string | null): void {
    expect(value).toMatch(OVERHEAD_RE);
    const ms = Number(value);
    expect(Number.isFinite(ms)).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(0);
  }

  it('is on a non-streaming answer: milliseconds with 3 decimals, non-negative', async () => {
    const res = await post({ model: SIM_MODEL, messages });
    expect(res.status).toBe(200);
    expectOverhead(res.headers.get(OVERHEAD_HEADER));
    await res.arrayBuffer();
  });

  it('is on a stream', async () => {
    const res = await post({ model: SIM_MODEL, messages, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expectOverhead(res.headers.get(OVERHEAD_HEADER));
    expect(await res.text()).toContain('data: [DONE]');
  });

  it("is on the engine's own error answers, not on the server's", async () => {
    const engineError = await post({ model: SIM_MODEL, messages, max_tokens: -1 });
    expect(engineError.status).toBe(400);
    expectOverhead(engineError.headers.get(OVERHEAD_HEADER));
    await engineError.arrayBuffer();

    const ours = await post({ model: 'no-such-model', messages });
    expect(ours.status).toBe(404);
    expect(ours.headers.get(OVERHEAD_HEADER)).toBeNull();
    await ours.arrayBuffer();
  });
});
