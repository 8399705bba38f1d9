import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { modelSchema, type ModelConfig } from '../../src/config/models.js';
import { isPortOpen } from '../../src/engines/net.js';
import {
  ModelManager,
  type EngineInfo,
  type ModelManagerOptions,
  type SwapEvent,
} from '../../src/engines/model-manager.js';
import { createLogger } from '../../src/log/logger.js';

type LogLine = Record<string, unknown> & { msg: string; level: number };

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function sim(id: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ id, engine: 'sim', ...extra });
}

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'engine-mgr-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A manager with a temp log dir, captured pino lines and recorded events; shut down after the test. */
function setup(models: ModelConfig[], opts: Partial<ModelManagerOptions> = {}) {
  const logs: LogLine[] = [];
  const log = createLogger('debug', { write: (s: string) => void logs.push(JSON.parse(s) as LogLine) });
  const states: EngineInfo[] = [];
  const swaps: SwapEvent[] = [];
  const logDir = tempDir();
  const mm = new ModelManager({ models, logDir, log, stopTimeoutMs: 2_000, restartBackoffMs: 20, ...opts });
  mm.on('state', (i) => states.push(i));
  mm.on('swap', (s) => swaps.push(s));
  cleanups.push(() => mm.shutdown());
  return { mm, logs, states, swaps, logDir };
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ESRCH');
    return false;
  }
}

function portOf(baseUrl: string): number {
  return Number(new URL(baseUrl).port);
}

const chat = (model: string) => ({ model, messages: [{ role: 'user', content: 'secret prompt 7f3a' }], max_tokens: 4 });

describe('ModelManager', () => {
  it('starts an engine, reports starting then ready, and serves a chat request', async () => {
    const { mm, states, swaps, logs } = setup([sim('a')]);
    expect(mm.info('a').state).toBe('stopped');
    const h = await mm.ensureReady('a');
    expect(states.map((s) => s.state)).toEqual(['starting', 'ready']);
    const info = mm.info('a');
    expect(info).toMatchObject({
      model: 'a',
      engine: 'sim',
      state: 'ready',
      baseUrl: h.baseUrl,
      restarts: 0,
      lastError: null,
    });
    expect(info.pid).toBeGreaterThan(0);
    expect(info.readyMs).toBeGreaterThan(0);
    expect(swaps).toEqual([{ from: null, to: 'a', reason: 'cold-start', ms: expect.any(Number) }]);

    const res = await h.client.post('/v1/chat/completions', chat('a'), { timeoutMs: 10_000 });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString()).choices[0].message.role).toBe('assistant');

    // Engine output reaches the log file and pino at debug, with fields; prompts reach neither.
    await waitFor(() => logs.some((l) => l.component === 'engine' && l.stream === 'stdout'), 'engine output in pino');
    const line = logs.find((l) => l.component === 'engine' && l.stream === 'stdout')!;
    expect(line).toMatchObject({ level: 20, model: 'a', enginePid: info.pid });
    expect(readFileSync(info.logFile, 'utf8')).toContain('"event":"ready"');
    expect(JSON.stringify(logs)).not.toContain('secret prompt');
  });

  it('shares one start between concurrent ensureReady calls', async () => {
    const { mm, states } = setup([sim('a', { sim: { startup_ms: 300 } })]);
    const handles = await Promise.all([mm.ensureReady('a'), mm.ensureReady('a'), mm.ensureReady('a')]);
    expect(new Set(handles.map((h) => h.baseUrl)).size).toBe(1);
    expect(states.filter((s) => s.state === 'starting')).toHaveLength(1);
  });

  it('rejects unknown models and already-aborted calls', async () => {
    const { mm } = setup([sim('a')]);
    await expect(mm.ensureReady('nope')).rejects.toMatchObject({ code: 'ENGINE_UNKNOWN_MODEL' });
    expect(() => mm.acquire('nope')).toThrow(/not in the model registry/);
    await expect(mm.ensureReady('a', AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
    expect(mm.info('a').state).toBe('stopped');
  });

  it('swaps A for B: stops A (process gone, port closed) and emits swap', async () => {
    const { mm, swaps } = setup([sim('a'), sim('b')]);
    const a = await mm.ensureReady('a');
    const pidA = mm.info('a').pid!;
    const b = await mm.ensureReady('b');
    expect(isAlive(pidA)).toBe(false);
    expect(await isPortOpen(portOf(a.baseUrl))).toBe(false);
    expect(mm.info('a')).toMatchObject({ state: 'stopped', pid: null });
    expect(mm.info('b').state).toBe('ready');
    expect(swaps.at(-1)).toMatchObject({ from: 'a', to: 'b', reason: 'lru-evict' });
    expect((await b.client.post('/v1/chat/completions', chat('b'))).status).toBe(200);
  });

  it('waits for the in-flight request on A before swapping to B', async () => {
    const { mm, logs } = setup([sim('a'), sim('b')]);
    await mm.ensureReady('a');
    const release = mm.acquire('a');
    expect(mm.inFlight('a')).toBe(1);
    const pidA = mm.info('a').pid!;
    let bReady = false;
    const toB = mm.ensureReady('b').then((h) => ((bReady = true), h));
    await waitFor(() => logs.some((l) => l.msg === 'waiting for requests to finish before swap'), 'the swap to wait');
    await new Promise((r) => setTimeout(r, 300));
    expect(bReady).toBe(false);
    expect(mm.info('a').state).toBe('ready');
    expect(isAlive(pidA)).toBe(true);
    release();
    release(); // idempotent: must not go negative
    expect(mm.inFlight('a')).toBe(0);
    await toB;
    expect(isAlive(pidA)).toBe(false);
  });

  it('lease() counts the request inside the loop, so a queued swap waits for it', async () => {
    const { mm } = setup([sim('a'), sim('b')]);
    const [lease, toB] = [mm.lease('a'), mm.ensureReady('b')];
    const l = await lease;
    expect(mm.inFlight('a')).toBe(1);
    expect((await l.client.post('/v1/chat/completions', chat('a'))).status).toBe(200);
    expect(mm.info('b').state).toBe('stopped');
    l.release();
    await toB;
    expect(mm.info('a').state).toBe('stopped');
  });

  it('gives up waiting for a swap when the caller aborts, and leaves A running', async () => {
    const { mm } = setup([sim('a'), sim('b')]);
    await mm.ensureReady('a');
    const release = mm.acquire('a');
    const ac = new AbortController();
    const toB = mm.ensureReady('b', ac.signal);
    setTimeout(() => ac.abort(), 100);
    await expect(toB).rejects.toMatchObject({ name: 'AbortError' });
    release();
    expect(mm.info('a').state).toBe('ready');
    expect(mm.info('b').state).toBe('stopped');
    await mm.ensureReady('a'); // the loop is free again
  });

  it('restarts an engine that was killed: failed, then a new pid that serves requests', async () => {
    const { mm, states, logs, swaps } = setup([sim('a')]);
    await mm.ensureReady('a');
    const pid1 = mm.info('a').pid!;
    process.kill(pid1, 'SIGKILL');
    await waitFor(() => mm.info('a').state === 'failed', 'state failed');
    expect(states.at(-1)).toMatchObject({ state: 'failed', pid: null });
    expect(mm.info('a').lastError).toMatch(/killed by SIGKILL.*engine log at/);
    expect(logs.find((l) => l.msg === 'engine exited unexpectedly')).toMatchObject({
      level: 40,
      model: 'a',
      signal: 'SIGKILL',
      logFile: mm.info('a').logFile,
    });

    const h = await mm.ensureReady('a');
    const pid2 = mm.info('a').pid!;
    expect(pid2).not.toBe(pid1);
    expect(mm.info('a').restarts).toBe(1);
    expect(swaps.at(-1)).toMatchObject({ from: null, to: 'a', reason: 'restart' });
    expect((await h.client.post('/v1/chat/completions', chat('a'))).status).toBe(200);
  });

  it('marks an engine that crashes on a request as failed (--crash-after)', async () => {
    const { mm } = setup([sim('a', { sim: { crash_after: 1 } })]);
    const h = await mm.ensureReady('a');
    expect((await h.client.post('/v1/chat/completions', chat('a'))).status).toBe(200);
    await h.client.post('/v1/chat/completions', chat('a')).catch(() => undefined);
    await waitFor(() => mm.info('a').state === 'failed', 'state failed');
    expect(mm.info('a').lastError).toMatch(/exited with code 1.*crash-after/);
  });

  it('reports a start failure with the stderr tail and exit code, then stops at the restart cap', async () => {
    const script = path.join(tempDir(), 'bad-engine.sh');
    writeFileSync(
      script,
      '#!/bin/sh\necho "loading weights" \necho "ValueError: Free memory on device is less than desired" >&2\nexit 3\n',
    );
    chmodSync(script, 0o755);
    const { mm } = setup([sim('bad', { command: script })], { maxRestarts: 2, restartBackoffMs: 10 });
    const first = await mm.ensureReady('bad').catch((e: unknown) => e);
    expect(first).toMatchObject({ code: 'ENGINE_START_FAILED', exitCode: 3, model: 'bad' });
    expect((first as Error).message).toMatch(
      /exited with code 3 during start-up; last output: ValueError: Free memory.*engine log at .*bad\.log/,
    );
    expect(mm.info('bad')).toMatchObject({ state: 'failed', pid: null });
    for (let i = 0; i < 2; i++)
      await expect(mm.ensureReady('bad')).rejects.toMatchObject({ code: 'ENGINE_START_FAILED' });
    expect(mm.info('bad').restarts).toBe(2);
    const capped = await mm.ensureReady('bad').catch((e: unknown) => e);
    expect(capped).toMatchObject({ code: 'ENGINE_RESTART_LIMIT' });
    expect((capped as Error).message).toMatch(/failed 3 times.*last error: .*ValueError: Free memory/);
    expect(mm.info('bad').restarts).toBe(2);
    await mm.stop('bad'); // an operator's stop resets the history
    await expect(mm.ensureReady('bad')).rejects.toMatchObject({ code: 'ENGINE_START_FAILED' });
  });

  it('reports a missing executable as a start failure', async () => {
    const { mm } = setup([sim('x', { command: '/nonexistent/engine-binary' })]);
    await expect(mm.ensureReady('x')).rejects.toMatchObject({
      code: 'ENGINE_START_FAILED',
      message: expect.stringMatching(/ENOENT/),
    });
  });

  it('kills an engine that ignores SIGTERM after stopTimeoutMs', async () => {
    const { mm, logs } = setup([sim('stubborn', { sim: { ignore_sigterm: true } })], { stopTimeoutMs: 300 });
    const h = await mm.ensureReady('stubborn');
    const pid = mm.info('stubborn').pid!;
    const t0 = Date.now();
    await mm.stop('stubborn');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(isAlive(pid)).toBe(false);
    expect(await isPortOpen(portOf(h.baseUrl))).toBe(false);
    expect(logs.some((l) => l.msg === 'engine ignored SIGTERM, sending SIGKILL')).toBe(true);
    expect(mm.info('stubborn').state).toBe('stopped');
  });

  it('kills the process group when the engine is not healthy within startup_timeout_s', async () => {
    const { mm, states } = setup([sim('slow', { startup_timeout_s: 0.8, sim: { startup_ms: 30_000 } })]);
    const err = await mm.ensureReady('slow').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENGINE_HEALTH_TIMEOUT', model: 'slow' });
    expect((err as Error).message).toMatch(/not healthy within 1 s.*startup_timeout_s/);
    const pid = states.find((s) => s.state === 'starting')!.pid!;
    expect(isAlive(pid)).toBe(false);
    expect(mm.info('slow').state).toBe('failed');
  });

  it('stops an idle engine after idle_ttl_s', async () => {
    const { mm } = setup([sim('a', { idle_ttl_s: 0.3 })]);
    await mm.ensureReady('a');
    const release = mm.acquire('a');
    await new Promise((r) => setTimeout(r, 500));
    expect(mm.info('a').state).toBe('ready'); // in flight: never idle
    const pid = mm.info('a').pid!;
    release();
    await waitFor(() => mm.info('a').state === 'stopped', 'idle stop', 5_000);
    expect(isAlive(pid)).toBe(false);
  });

  it('shutdown stops every engine and refuses later starts', async () => {
    const { mm } = setup([sim('a'), sim('b')], { maxLoaded: 2 });
    await Promise.all([mm.ensureReady('a'), mm.ensureReady('b')]);
    const pids = mm.list().map((i) => i.pid!);
    expect(pids).toHaveLength(2);
    await Promise.all([mm.shutdown(), mm.shutdown()]);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    expect(mm.list().map((i) => i.state)).toEqual(['shutdown', 'shutdown']);
    await expect(mm.ensureReady('a')).rejects.toMatchObject({ code: 'ENGINE_SHUTDOWN' });
  });

  it('shutdown during a start ends the start with ENGINE_SHUTDOWN', async () => {
    const { mm, states } = setup([sim('slow', { sim: { startup_ms: 30_000 } })]);
    const start = mm.ensureReady('slow');
    await waitFor(() => mm.info('slow').state === 'starting', 'starting');
    const pid = states.at(-1)!.pid!;
    await mm.shutdown();
    await expect(start).rejects.toMatchObject({ code: 'ENGINE_SHUTDOWN' });
    expect(isAlive(pid)).toBe(false);
  });
});
