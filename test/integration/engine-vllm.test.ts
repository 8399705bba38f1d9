/**
 * The ModelManager's vLLM adapter end to end, with no GPU and no vLLM: a fake `vllm`
 * (test/fixtures/vllm/fake-vllm.sh: `--version`, and `serve …` running a tiny vLLM-like HTTP
 * server) as the model's `command`, and a fake nvidia-smi printing CSV the test rewrites.
 * Everything else is the real code: version gate, memory wait, spawn, capacity read, sleep/wake.
 */
import {
  accessSync,
  chmodSync,
  constants,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { modelSchema, type ModelConfig } from '../../src/config/models.js';
import { isEngineError } from '../../src/engines/errors.js';
import {
  ModelManager,
  type EngineInfo,
  type ModelManagerOptions,
  type SwapEvent,
} from '../../src/engines/model-manager.js';
import { createLogger } from '../../src/log/logger.js';
import { isProcessAlive } from '../../src/os/process.js';

type LogLine = Record<string, unknown> & { msg: string; level: number };

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures');
const FAKE_VLLM = path.join(FIXTURES, 'vllm/fake-vllm.sh');
const FAKE_SMI = path.join(FIXTURES, 'vllm/fake-nvidia-smi.sh');
const gpusCsv = (name: string) => readFileSync(path.join(FIXTURES, 'nvidia-smi', name), 'utf8');
// one-gpu-busy.csv: GPU 0, RTX 4080, 2,966 of 16,376 MiB free. The same GPU after the release:
const ONE_GPU_FREE = '0, GPU-1b2c3d4e-aaaa-bbbb-cccc-111111111111, NVIDIA GeForce RTX 4080, 16376, 250, 16126, 0, 40\n';

beforeAll(() => {
  // A checkout may lose the executable bits of the fixtures: the manager runs them directly.
  for (const f of [FAKE_VLLM, FAKE_SMI]) {
    try {
      accessSync(f, constants.X_OK);
    } catch {
      chmodSync(f, 0o755);
    }
  }
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'engine-vllm-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fake nvidia-smi for one test: its state dir holds gpus.csv / apps.csv and logs each call. */
function fakeSmi(gpus: string | null, apps?: string) {
  const dir = tempDir();
  const set = (csv: string | null) =>
    csv === null ? rmSync(path.join(dir, 'gpus.csv'), { force: true }) : writeFileSync(path.join(dir, 'gpus.csv'), csv);
  set(gpus);
  if (apps !== undefined) writeFileSync(path.join(dir, 'apps.csv'), apps);
  const command = path.join(dir, 'nvidia-smi');
  writeFileSync(command, `#!/bin/sh\nexec sh '${FAKE_SMI}' '${dir}' "$@"\n`);
  chmodSync(command, 0o755);
  const calls = () =>
    existsSync(path.join(dir, 'calls.log'))
      ? readFileSync(path.join(dir, 'calls.log'), 'utf8').split('\n').filter(Boolean)
      : [];
  return { command, set, gpuQueries: () => calls().filter((c) => c.startsWith('--query-gpu')).length };
}

/** A vllm model run by the fake vllm; `env` are the fake's knobs (see fake-vllm-server.mjs). */
function vllm(id: string, options: Record<string, unknown> = {}, env: Record<string, string> = {}): ModelConfig {
  return modelSchema.parse({
    id,
    engine: 'vllm',
    command: FAKE_VLLM,
    startup_timeout_s: 20,
    options: { ...options, env: { FAKE_VLLM_NODE: process.execPath, ...env } },
  });
}

function setup(models: ModelConfig[], opts: Partial<ModelManagerOptions> = {}) {
  const logs: LogLine[] = [];
  const log = createLogger('debug', { write: (s: string) => void logs.push(JSON.parse(s) as LogLine) });
  const states: EngineInfo[] = [];
  const swaps: SwapEvent[] = [];
  const mm = new ModelManager({
    models,
    logDir: tempDir(),
    log,
    stopTimeoutMs: 2_000,
    restartBackoffMs: 20,
    nvidiaSmi: '/nonexistent/nvidia-smi',
    gpuMemoryPollMs: 50,
    ...opts,
  });
  mm.on('state', (i) => states.push(i));
  mm.on('swap', (s) => swaps.push(s));
  cleanups.push(() => mm.shutdown());
  return { mm, logs, states, swaps };
}

interface FakeState {
  sleeping: boolean;
  level: number | null;
  sleeps: number[];
  wakes: number;
  pid: number;
  argv: string[];
  host: string;
  cudaVisibleDevices: string | null;
  devMode: string | null;
}

async function fakeState(baseUrl: string): Promise<FakeState> {
  const res = await fetch(`${baseUrl}/debug/state`);
  return (await res.json()) as FakeState;
}

const chat = (model: string) => ({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });

describe('vLLM version gate', () => {
  it('refuses vLLM < 0.22.0 before spawning anything, and asks the command once', async () => {
    const dir = tempDir();
    const calls = path.join(dir, 'version-calls');
    const { mm, logs } = setup([vllm('old', {}, { FAKE_VLLM_VERSION: '0.21.3', FAKE_VLLM_CALLS: calls })]);
    const err = await mm.ensureReady('old').catch((e: unknown) => e);
    expect(isEngineError(err, 'ENGINE_START_FAILED')).toBe(true);
    expect((err as Error).message).toContain(
      'vLLM 0.21.3 has a Host-header authentication bypass (fixed in 0.22.0); upgrade with pip install -U vllm',
    );
    expect(mm.info('old')).toMatchObject({ state: 'failed', pid: null, lastError: expect.stringContaining('0.21.3') });
    expect(existsSync(mm.info('old').logFile)).toBe(false); // never spawned
    expect(logs.some((l) => l.msg === 'engine spawned')).toBe(false);

    await mm.stop('old'); // operator reset; the verdict is cached per command
    await expect(mm.ensureReady('old')).rejects.toMatchObject({ code: 'ENGINE_START_FAILED' });
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['--version']);
  });

  it('starts vLLM >= 0.22.0 and logs the version', async () => {
    const { mm, logs } = setup([vllm('new', {}, { FAKE_VLLM_VERSION: '0.22.0' })]);
    const h = await mm.ensureReady('new');
    expect(mm.info('new').state).toBe('ready');
    expect(logs.find((l) => l.msg === 'vLLM version')).toMatchObject({ vllmVersion: '0.22.0', command: FAKE_VLLM });
    const res = await h.client.post('/v1/chat/completions', chat('new'), { timeoutMs: 5_000 });
    expect(res.status).toBe(200);
  });
});

describe('free GPU memory check', () => {
  it('waits for the memory, then fails with ENGINE_GPU_MEMORY naming the numbers and the holder', async () => {
    const smi = fakeSmi(
      gpusCsv('one-gpu-busy.csv'),
      'GPU-1b2c3d4e-aaaa-bbbb-cccc-111111111111, 4242, python3, 13380\n',
    );
    const { mm, logs } = setup([vllm('X', { gpu_memory_utilization: 0.9 })], {
      nvidiaSmi: smi.command,
      gpuMemoryWaitMs: 1500,
      gpuMemoryPollMs: 100,
    });
    const t0 = Date.now();
    const err = await mm.ensureReady('X').catch((e: unknown) => e);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    expect(isEngineError(err, 'ENGINE_GPU_MEMORY')).toBe(true);
    expect((err as Error).message).toContain(
      'GPU 0 (NVIDIA GeForce RTX 4080) has 2,966 MiB free of 16,376 MiB; model X needs 0.9 × 16,376 = 14,739 MiB. Another process holds it: pid 4242 (python3, 13,380 MiB).',
    );
    // Polled, not checked once. How often depends on how fast the fake nvidia-smi (a shell
    // script) runs: 15 times on a quiet machine, 3 under load.
    expect(smi.gpuQueries()).toBeGreaterThanOrEqual(2);
    expect(mm.info('X')).toMatchObject({ state: 'failed', lastError: expect.stringContaining('14,739 MiB') });
    expect(logs.some((l) => l.msg === 'waiting for GPU memory to be released')).toBe(true);
    expect(logs.some((l) => l.msg === 'engine spawned')).toBe(false);
  });

  it("starts once the previous engine's memory is released", async () => {
    const smi = fakeSmi(gpusCsv('one-gpu-busy.csv'));
    const { mm, logs } = setup([vllm('X', { gpu_memory_utilization: 0.9 })], {
      nvidiaSmi: smi.command,
      gpuMemoryWaitMs: 10_000,
      gpuMemoryPollMs: 50,
    });
    const t0 = Date.now();
    setTimeout(() => smi.set(ONE_GPU_FREE), 400);
    await mm.ensureReady('X');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(mm.info('X').state).toBe('ready');
    expect(logs.find((l) => l.msg === 'GPU memory free')?.['waitedMs']).toBeGreaterThanOrEqual(350);
  });

  it('sets CUDA_VISIBLE_DEVICES from WORKER_GPUS and checks only those GPUs', async () => {
    // two-gpus.csv: GPU 0 has 81,008 MiB free, GPU 1 only 10,700 (of 81,559).
    const smi = fakeSmi(gpusCsv('two-gpus.csv'));
    const small = setup(
      [
        vllm('small', { gpu_memory_utilization: 0.1 }),
        vllm('pinned', { gpu_memory_utilization: 0.9 }, { CUDA_VISIBLE_DEVICES: '0' }),
      ],
      { nvidiaSmi: smi.command, workerGpus: '1' },
    );
    const h = await small.mm.ensureReady('small');
    expect((await fakeState(h.baseUrl)).cudaVisibleDevices).toBe('1');
    // A model's own options.env CUDA_VISIBLE_DEVICES wins over WORKER_GPUS.
    const p = await small.mm.ensureReady('pinned');
    expect((await fakeState(p.baseUrl)).cudaVisibleDevices).toBe('0');

    const big = setup([vllm('big', { gpu_memory_utilization: 0.9 })], {
      nvidiaSmi: smi.command,
      workerGpus: '1',
      gpuMemoryWaitMs: 200,
    });
    const err = await big.mm.ensureReady('big').catch((e: unknown) => e);
    expect(isEngineError(err, 'ENGINE_GPU_MEMORY')).toBe(true);
    expect((err as Error).message).toContain(
      'GPU 1 (NVIDIA H100 80GB HBM3) has 10,700 MiB free of 81,559 MiB; model big needs 0.9 × 81,559 = 73,404 MiB.',
    );
    expect((err as Error).message).not.toContain('GPU 0');
  });

  it('warns and lets vLLM try when nvidia-smi is missing or fails', async () => {
    const broken = fakeSmi(null); // prints the driver error, exits 9
    for (const nvidiaSmi of ['/nonexistent/nvidia-smi', broken.command]) {
      const { mm, logs } = setup([vllm('m', { gpu_memory_utilization: 0.9 })], { nvidiaSmi });
      await mm.ensureReady('m');
      expect(mm.info('m').state).toBe('ready');
      expect(logs.find((l) => l.msg === 'cannot check free GPU memory; letting vLLM try')).toMatchObject({
        level: 40,
        model: 'm',
      });
      await mm.shutdown();
    }
  });
});

describe('real concurrency', () => {
  it('caps max_num_seqs by the "Maximum concurrency" line of the start-up log', async () => {
    const { mm, logs } = setup(
      [
        vllm('kv', { max_num_seqs: 64, max_model_len: 8192 }, { FAKE_VLLM_CONCURRENCY: '21.51' }),
        vllm('seqs', { max_num_seqs: 8 }, { FAKE_VLLM_CONCURRENCY: '21.51' }),
        vllm('metrics', { max_model_len: 400 }, { FAKE_VLLM_GPU_BLOCKS: '100' }),
        vllm('none', { max_num_seqs: 48 }),
      ],
      { maxLoaded: 4 },
    );
    // The line is followed by 80 more lines: it is read from the engine log, not the 50-line ring.
    expect((await mm.ensureReady('kv')).concurrency).toBe(21);
    expect(logs.find((l) => l.msg === 'engine ready' && l['model'] === 'kv')).toMatchObject({
      concurrency: 21,
      concurrencySource: 'log: 21.51x for 8192 tokens',
    });
    expect((await mm.ensureReady('seqs')).concurrency).toBe(8);
    // No log line: /metrics cache_config_info (100 blocks × 16 tokens) over max_model_len 400.
    expect((await mm.ensureReady('metrics')).concurrency).toBe(4);
    expect((await mm.ensureReady('none')).concurrency).toBe(48);
    const lease = await mm.lease('kv');
    expect(lease.concurrency).toBe(21);
    lease.release();
  });
});

describe('sleep mode as a swap cache', () => {
  it('puts an evicted engine to sleep and wakes it on ensureReady, with the same process', async () => {
    const { mm, states, swaps, logs } = setup(
      [
        vllm('a', { sleep_mode: 'level2', max_num_seqs: 32 }, { FAKE_VLLM_CONCURRENCY: '9.5' }),
        vllm('b', { sleep_mode: 'level2' }),
      ],
      {
        bindHost: '0.0.0.0', // a dev-mode engine ignores it
      },
    );
    const a = await mm.ensureReady('a');
    const aPid = mm.info('a').pid!;
    const started = await fakeState(a.baseUrl);
    expect(started).toMatchObject({ host: '127.0.0.1', devMode: '1', sleeping: false });
    expect(started.argv).toContain('--enable-sleep-mode');

    await mm.ensureReady('b');
    expect(mm.info('a')).toMatchObject({ state: 'sleeping', pid: aPid });
    expect(isProcessAlive(aPid)).toBe(true);
    expect(await fakeState(a.baseUrl)).toMatchObject({ sleeping: true, level: 2, sleeps: [2] });
    // The old handle's client was closed; a request straight to the sleeping engine gets vLLM's 503.
    const direct = await fetch(`${a.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('a')),
    });
    expect(direct.status).toBe(503);
    expect(logs.find((l) => l.msg === 'engine asleep')).toMatchObject({ model: 'a', level: 2 });

    const woke = await mm.ensureReady('a');
    expect(mm.info('a')).toMatchObject({ state: 'ready', pid: aPid });
    expect(mm.info('b').state).toBe('sleeping');
    expect(woke.concurrency).toBe(9); // measured at its start, kept across the sleep
    expect(await fakeState(a.baseUrl)).toMatchObject({ sleeping: false, wakes: 1 });
    const res = await woke.client.post('/v1/chat/completions', chat('a'), { timeoutMs: 5_000 });
    expect(res.status).toBe(200);
    expect(logs.find((l) => l.msg === 'engine woke up')).toMatchObject({
      model: 'a',
      level: 2,
      wakeMs: expect.any(Number),
    });

    const aStates = states.filter((s) => s.model === 'a').map((s) => s.state);
    expect(aStates).toEqual(['starting', 'ready', 'sleeping', 'starting', 'ready']);
    expect(swaps.map((s) => [s.from, s.to, s.reason])).toEqual([
      [null, 'a', 'cold-start'],
      ['a', 'b', 'lru-evict'],
      ['b', 'a', 'lru-evict'],
    ]);
    // Shutdown stops sleeping engines too.
    const bPid = mm.info('b').pid!;
    await mm.shutdown();
    expect(isProcessAlive(aPid) || isProcessAlive(bPid)).toBe(false);
  });

  it('sleeps at level 1 while the host RAM budget allows, then at level 2', async () => {
    const m = (id: string) => vllm(id, { sleep_mode: 'level1', host_ram_mb: 100 });
    const { mm } = setup([m('a'), m('b'), m('c')], { hostRamBudgetMb: 150 });
    const a = await mm.ensureReady('a');
    const b = await mm.ensureReady('b'); // a sleeps: 100 of 150 MiB
    await mm.ensureReady('c'); // b would need 200: level 2
    expect((await fakeState(a.baseUrl)).sleeps).toEqual([1]);
    expect((await fakeState(b.baseUrl)).sleeps).toEqual([2]);
    expect(mm.list().map((i) => i.state)).toEqual(['sleeping', 'sleeping', 'ready']);
  });

  it('stops the engine as before when sleep fails, and cold-starts it when wake-up fails', async () => {
    const { mm, logs } = setup([
      vllm('nosleep', { sleep_mode: 'level2' }, { FAKE_VLLM_SLEEP_FAIL: '1' }),
      vllm('nowake', { sleep_mode: 'level2' }, { FAKE_VLLM_WAKE_FAIL: '1' }),
      vllm('other'),
    ]);
    await mm.ensureReady('nosleep');
    const pid1 = mm.info('nosleep').pid!;
    await mm.ensureReady('other');
    expect(mm.info('nosleep')).toMatchObject({ state: 'stopped', pid: null });
    expect(isProcessAlive(pid1)).toBe(false);
    expect(logs.some((l) => l.msg === 'engine sleep failed; stopping it instead')).toBe(true);

    await mm.ensureReady('nowake');
    const pid2 = mm.info('nowake').pid!;
    await mm.ensureReady('other');
    expect(mm.info('nowake').state).toBe('sleeping');
    const h = await mm.ensureReady('nowake');
    expect(mm.info('nowake').state).toBe('ready');
    expect(mm.info('nowake').pid).not.toBe(pid2);
    expect(isProcessAlive(pid2)).toBe(false);
    expect(logs.some((l) => l.msg === 'engine wake-up failed; restarting it')).toBe(true);
    expect((await fakeState(h.baseUrl)).sleeps).toEqual([]);
  });

  it('stops a sleeping engine when its GPU memory is needed for a cold start', async () => {
    // The GPU looks busy until the sleeping engine is stopped (our fake nvidia-smi cannot see it go).
    const smi = fakeSmi(gpusCsv('one-gpu-busy.csv'));
    const { mm, logs } = setup(
      [
        vllm('sleeper', { sleep_mode: 'level2', gpu_memory_utilization: 0.1 }),
        vllm('small', { gpu_memory_utilization: 0.1 }),
        vllm('big', { gpu_memory_utilization: 0.9 }),
      ],
      {
        nvidiaSmi: smi.command,
        gpuMemoryWaitMs: 5_000,
      },
    );
    await mm.ensureReady('sleeper');
    await mm.ensureReady('small');
    expect(mm.info('sleeper').state).toBe('sleeping');
    const sleeperPid = mm.info('sleeper').pid!;
    const done = mm.ensureReady('big');
    await expect.poll(() => mm.info('sleeper').state, { timeout: 5_000 }).toBe('stopped');
    expect(isProcessAlive(sleeperPid)).toBe(false);
    expect(logs.find((l) => l.msg === 'stopping a sleeping engine to free GPU memory')).toMatchObject({
      model: 'sleeper',
      for: 'big',
    });
    smi.set(ONE_GPU_FREE);
    await done;
    expect(mm.info('big').state).toBe('ready');
  });

  it('counts a sleeping engine that dies as failed, and cold-starts it on the next ensureReady', async () => {
    const { mm } = setup([vllm('a', { sleep_mode: 'level2' }), vllm('b')]);
    await mm.ensureReady('a');
    await mm.ensureReady('b');
    const pid = mm.info('a').pid!;
    expect(mm.info('a').state).toBe('sleeping');
    process.kill(pid, 'SIGKILL');
    await expect.poll(() => mm.info('a').state, { timeout: 5_000 }).toBe('failed');
    expect(mm.info('a').lastError).toContain('was killed by SIGKILL');
    const h = await mm.ensureReady('a');
    expect(mm.info('a')).toMatchObject({ state: 'ready', restarts: 1 });
    expect(mm.info('a').pid).not.toBe(pid);
    expect((await fakeState(h.baseUrl)).wakes).toBe(0);
  });

  it('stops a model without sleep_mode on eviction, and runs it without dev mode', async () => {
    const { mm } = setup([vllm('a'), vllm('b')]);
    const a = await mm.ensureReady('a');
    expect((await fakeState(a.baseUrl)).devMode).toBeNull();
    await mm.ensureReady('b');
    expect(mm.info('a')).toMatchObject({ state: 'stopped', pid: null });
  });
});

// Keeps the fixture CSVs and this file's inline copy in step.
it('fixture sanity: ONE_GPU_FREE is the busy GPU with its memory released', () => {
  const busy = gpusCsv('one-gpu-busy.csv')
    .split(',')
    .map((s) => s.trim());
  const free = ONE_GPU_FREE.split(',').map((s) => s.trim());
  expect(free.slice(0, 4)).toEqual(busy.slice(0, 4));
});
