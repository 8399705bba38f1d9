import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { modelSchema } from '../../src/config/models.js';
import { envSchema } from '../../src/config/env.js';
import { buildEngineCommand, buildVllmCommand } from '../../src/engines/commands.js';
import { selectEvictions } from '../../src/engines/eviction.js';
import { classifyFailure } from '../../src/engines/failures.js';
import { EngineError } from '../../src/engines/errors.js';
import { parseComputeApps, parseNvidiaSmi, visibleGpus, type GpuQuery } from '../../src/engines/gpu.js';
import {
  chooseSleepLevel,
  compareVersions,
  decideGpuMemory,
  describeShortfall,
  effectiveConcurrency,
  findVllmVersion,
  judgeVllmVersion,
  linesOfLastStart,
  parallelSize,
  parseCacheConfigInfo,
  parseKvCacheTokens,
  parseMaxConcurrency,
  parseVersion,
  sleepModeOf,
} from '../../src/engines/vllm.js';

const model = (raw: Record<string, unknown>) => modelSchema.parse(raw);
const smi = (name: string): GpuQuery =>
  parseNvidiaSmi(
    readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/nvidia-smi', name), 'utf8'),
    1,
  );

describe('buildVllmCommand with sleep mode', () => {
  it('adds --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 only when sleep_mode is on', () => {
    for (const sleep_mode of ['level1', 'level2']) {
      const cmd = buildVllmCommand(
        model({ id: 'm', engine: 'vllm', options: { sleep_mode, max_num_seqs: 8, env: { HF_HOME: '/hf' } } }),
        9000,
      );
      expect(cmd).toEqual({
        command: 'vllm',
        args: [
          'serve',
          'm',
          '--host',
          '127.0.0.1',
          '--port',
          '9000',
          '--served-model-name',
          'm',
          '--max-num-seqs',
          '8',
          '--enable-sleep-mode',
        ],
        env: { HF_HOME: '/hf', VLLM_SERVER_DEV_MODE: '1' },
      });
    }
    for (const options of [{}, { sleep_mode: 'off' }]) {
      const cmd = buildVllmCommand(model({ id: 'm', engine: 'vllm', options }), 9000, '0.0.0.0');
      expect(cmd.args).not.toContain('--enable-sleep-mode');
      expect(cmd.env).toEqual({});
      expect(cmd.args.slice(2, 4)).toEqual(['--host', '0.0.0.0']);
    }
  });

  it('always binds a dev-mode engine to 127.0.0.1, whatever ENGINE_BIND_HOST or extra_args say', () => {
    const m = model({
      id: 'm',
      engine: 'vllm',
      options: {
        sleep_mode: 'level2',
        extra_args: ['--host', '0.0.0.0', '--seed', '7', '--host=::', '--enable-sleep-mode'],
      },
    });
    const { args } = buildEngineCommand(m, 9000, '0.0.0.0');
    expect(args).toEqual([
      'serve',
      'm',
      '--host',
      '127.0.0.1',
      '--port',
      '9000',
      '--served-model-name',
      'm',
      '--seed',
      '7',
      '--enable-sleep-mode',
    ]);
    expect(args.filter((a) => a === '--enable-sleep-mode')).toHaveLength(1);
    // Dev mode turned on by hand through env counts too; "0" is off, as in vLLM.
    expect(
      buildVllmCommand(
        model({ id: 'm', engine: 'vllm', options: { env: { VLLM_SERVER_DEV_MODE: '1' } } }),
        1,
        '0.0.0.0',
      ).args[3],
    ).toBe('127.0.0.1');
    expect(
      buildVllmCommand(
        model({ id: 'm', engine: 'vllm', options: { env: { VLLM_SERVER_DEV_MODE: '0' } } }),
        1,
        '0.0.0.0',
      ).args[3],
    ).toBe('0.0.0.0');
  });

  it('validates the new options and environment variables', () => {
    expect(() => model({ id: 'm', engine: 'vllm', options: { sleep_mode: 'level3' } })).toThrow();
    expect(() => model({ id: 'm', engine: 'vllm', options: { host_ram_mb: -1 } })).toThrow();
    expect(sleepModeOf(model({ id: 'm', engine: 'vllm' }))).toBe('off');
    expect(sleepModeOf(model({ id: 'm', engine: 'vllm', options: { sleep_mode: 'level1' } }))).toBe('level1');
    expect(sleepModeOf(model({ id: 'm', engine: 'sim', options: { sleep_mode: 'level1' } }))).toBe('off');
    expect(envSchema.parse({ WORKER_GPUS: '0,1', HOST_RAM_BUDGET_MB: '4096' })).toMatchObject({
      WORKER_GPUS: '0,1',
      HOST_RAM_BUDGET_MB: 4096,
    });
    expect(envSchema.parse({ WORKER_GPUS: 'GPU-aaaa0000-0000-0000-0000-000000000000' }).WORKER_GPUS).toBe(
      'GPU-aaaa0000-0000-0000-0000-000000000000',
    );
    expect(() => envSchema.parse({ WORKER_GPUS: '0;1' })).toThrow();
  });
});

describe('vLLM version gate', () => {
  it('orders versions as PEP 440 does', () => {
    const ordered = [
      '0.9.2',
      '0.21.3',
      '0.22.0.dev5+g1a2b3c',
      '0.22.0a1',
      '0.22.0rc1.dev2',
      '0.22.0rc1',
      '0.22.0',
      '0.22.0+cu128',
      '0.22.0.post1',
      '0.22.1.dev3',
      '0.22.1',
      '0.23',
      '1.0.0',
    ];
    for (let i = 0; i + 1 < ordered.length; i++) {
      const [a, b] = [ordered[i]!, ordered[i + 1]!];
      expect(compareVersions(a, b), `${a} vs ${b}`).toBeLessThanOrEqual(0);
      expect(compareVersions(b, a), `${b} vs ${a}`).toBeGreaterThanOrEqual(0);
    }
    expect(compareVersions('0.22.0', '0.22.0+cu128')).toBe(0);
    expect(compareVersions('0.22', '0.22.0')).toBe(0);
    expect(compareVersions('0.21.10', '0.21.9')).toBe(1);
    expect(parseVersion('0.10.1rc1')).toEqual({ release: [0, 10, 1], pre: [2, 1], post: null, dev: null });
    expect(parseVersion('not-a-version')).toBeNull();
    expect(() => compareVersions('x', '0.22.0')).toThrow(/not a version/);
  });

  it('finds the version after vLLM log lines and refuses releases before 0.22.0', () => {
    const out = 'INFO 08-01 12:00:00 [__init__.py:241] Automatically detected platform cuda.\n0.21.3\n';
    expect(findVllmVersion(out)).toBe('0.21.3');
    expect(findVllmVersion('vllm 0.11.0\n')).toBe('0.11.0');
    expect(findVllmVersion('\x1b[32mINFO\x1b[0m loading\n0.22.1.dev3+gabc.cu128')).toBe('0.22.1.dev3+gabc.cu128');
    expect(judgeVllmVersion(out)).toEqual({
      kind: 'refused',
      version: '0.21.3',
      message:
        'vLLM 0.21.3 has a Host-header authentication bypass (fixed in 0.22.0); upgrade with pip install -U vllm',
    });
    expect(judgeVllmVersion('0.22.0rc1')).toMatchObject({ kind: 'refused' });
    expect(judgeVllmVersion('0.22.0\n')).toEqual({ kind: 'ok', version: '0.22.0' });
    expect(judgeVllmVersion('0.22.0.post1')).toMatchObject({ kind: 'ok' });
    expect(judgeVllmVersion('Traceback (most recent call last):\n  ImportError: libcudart.so.12')).toMatchObject({
      kind: 'unknown',
    });
  });
});

describe('real concurrency from the KV cache', () => {
  it('reads "Maximum concurrency" lines of several vLLM versions', () => {
    // V1 engine (0.8+): thousands separators, engine-core prefix.
    expect(
      parseMaxConcurrency([
        '(EngineCore_DP0 pid=4121) INFO 08-01 12:00:03 [kv_cache_utils.py:1091] Maximum concurrency for 8,192 tokens per request: 21.51x',
      ]),
    ).toEqual({ maxConcurrency: 21.51, tokensPerRequest: 8192 });
    // V0 engine (0.6/0.7): no separators.
    expect(
      parseMaxConcurrency(
        'INFO 01-20 09:14:02 executor_base.py:115] Maximum concurrency for 4096 tokens per request: 3.58x',
      ),
    ).toEqual({ maxConcurrency: 3.58, tokensPerRequest: 4096 });
    // Coloured output, and the last line wins within one rank.
    expect(
      parseMaxConcurrency(
        '\x1b[32mINFO\x1b[0m Maximum concurrency for 32,768 tokens per request: 1.20x\nINFO Maximum concurrency for 32,768 tokens per request: 2.40x',
      )?.maxConcurrency,
    ).toBe(2.4);
    // Data parallel: one line per rank, summed.
    const dp = [
      '(EngineCore_DP0 pid=1) INFO Maximum concurrency for 8,192 tokens per request: 10.25x',
      '(EngineCore_DP1 pid=2) INFO Maximum concurrency for 8,192 tokens per request: 10.25x',
    ];
    expect(parseMaxConcurrency(dp)?.maxConcurrency).toBe(20.5);
    expect(parseMaxConcurrency(['INFO Route: /v1/models, Methods: GET'])).toBeNull();
  });

  it('falls back to the KV cache size in tokens, from the log or /metrics', () => {
    expect(
      parseKvCacheTokens('(EngineCore_DP0 pid=9) INFO [kv_cache_utils.py:1087] GPU KV cache size: 175,920 tokens'),
    ).toBe(175_920);
    expect(parseKvCacheTokens('nothing here')).toBeNull();
    const metrics =
      '# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization="0.9",num_gpu_blocks="10995",num_cpu_blocks="None"} 1.0\n';
    expect(parseCacheConfigInfo(metrics)).toBe(175_920);
    expect(parseCacheConfigInfo('vllm:num_requests_running{model_name="m"} 0.0')).toBeNull();
  });

  it('caps max_num_seqs by the KV cache, never below 1', () => {
    expect(effectiveConcurrency(256, 21.51)).toBe(21);
    expect(effectiveConcurrency(16, 21.51)).toBe(16);
    expect(effectiveConcurrency(256, 0.4)).toBe(1);
    expect(effectiveConcurrency(48, null)).toBe(48);
  });

  it('reads only the lines of the last start from an engine log', () => {
    const log =
      '--- 2025-01-01T00:00:00.000Z starting vllm serve m\nMaximum concurrency for 8,192 tokens per request: 99.00x\n--- 2025-01-01T01:00:00.000Z starting vllm serve m\nloading\n';
    expect(linesOfLastStart(log)).toEqual(['loading', '']);
    expect(parseMaxConcurrency(linesOfLastStart(log))).toBeNull();
  });
});

describe('free GPU memory before a vLLM start', () => {
  it('needs gpu_memory_utilization × TOTAL free, with the numbers in the message', () => {
    const d = decideGpuMemory(smi('one-gpu-busy.csv'), {
      cudaVisibleDevices: undefined,
      utilization: 0.9,
      gpuCount: 1,
    });
    expect(d.kind).toBe('short');
    if (d.kind !== 'short') return;
    expect(d.short.map((s) => [s.gpu.index, s.neededMiB])).toEqual([[0, 14_739]]);
    const apps = parseComputeApps('GPU-1b2c3d4e-aaaa-bbbb-cccc-111111111111, 4242, /usr/bin/python3, 13380\n');
    expect(describeShortfall('X', 0.9, d.short, apps)).toBe(
      'GPU 0 (NVIDIA GeForce RTX 4080) has 2,966 MiB free of 16,376 MiB; model X needs 0.9 × 16,376 = 14,739 MiB. Another process holds it: pid 4242 (/usr/bin/python3, 13,380 MiB).',
    );
    expect(
      describeShortfall('X', 0.9, d.short, apps, (pid) => (pid === 4242 ? 'our engine for model Y, sleeping' : null)),
    ).toContain('pid 4242 (our engine for model Y, sleeping, 13,380 MiB)');
    expect(describeShortfall('X', 0.9, d.short, [])).toContain('nvidia-smi lists no process holding it');
    expect(
      decideGpuMemory(smi('one-gpu-busy.csv'), { cudaVisibleDevices: undefined, utilization: 0.18, gpuCount: 1 }).kind,
    ).toBe('ok');
  });

  it('checks only the GPUs the engine uses: CUDA_VISIBLE_DEVICES order, tensor/pipeline parallel size', () => {
    const two = smi('two-gpus.csv'); // GPU 0: 81,008 MiB free; GPU 1: 10,700 MiB free, both 81,559 total
    const at = (cudaVisibleDevices: string | undefined, gpuCount: number) =>
      decideGpuMemory(two, { cudaVisibleDevices, utilization: 0.9, gpuCount });
    expect(at(undefined, 1).kind).toBe('ok'); // TP 1 uses device 0 only
    expect(at('1', 1)).toMatchObject({ kind: 'short', short: [{ gpu: { index: 1 }, neededMiB: 73_404 }] });
    expect(at('1,0', 1).kind).toBe('short'); // device 0 of the engine is GPU 1
    expect(at('GPU-aaaa0000-0000-0000-0000-000000000000', 1).kind).toBe('ok');
    expect(at(undefined, 2).kind).toBe('short');
    expect(at('7', 1)).toMatchObject({
      kind: 'unknown',
      reason: expect.stringContaining('CUDA_VISIBLE_DEVICES=7 names no GPU'),
    });
    expect(visibleGpus(two.ok ? two.gpus : [], '1,0').map((g) => g.index)).toEqual([1, 0]);
    expect(parallelSize(['--tensor-parallel-size', '2', '--seed', '1'])).toBe(2);
    expect(parallelSize(['-tp', '2', '--pipeline-parallel-size=2'])).toBe(4);
    expect(parallelSize(['--data-parallel-size', '2'])).toBe(2);
    expect(parallelSize(['--tensor-parallel-size', 'x'])).toBe(1);
    expect(parallelSize([])).toBe(1);
  });

  it('lets vLLM try when the GPUs cannot be read, and credits memory a waking engine already holds', () => {
    expect(
      decideGpuMemory(
        { ok: false, reason: 'nvidia-smi not found' },
        { cudaVisibleDevices: undefined, utilization: 0.9, gpuCount: 1 },
      ),
    ).toEqual({ kind: 'unknown', reason: 'nvidia-smi not found' });
    expect(
      decideGpuMemory({ ok: true, gpus: [] }, { cudaVisibleDevices: undefined, utilization: 0.9, gpuCount: 1 }).kind,
    ).toBe('unknown');
    const held = new Map([['GPU-1b2c3d4e-aaaa-bbbb-cccc-111111111111', 12_000]]);
    expect(
      decideGpuMemory(smi('one-gpu-busy.csv'), {
        cudaVisibleDevices: undefined,
        utilization: 0.9,
        gpuCount: 1,
        heldMiB: held,
      }).kind,
    ).toBe('ok');
  });

  it('parses nvidia-smi compute apps, names with commas and [N/A] included', () => {
    expect(
      parseComputeApps('GPU-a, 12, python3, 100\nGPU-b, 13, /opt/x, y/run, [N/A]\nNo running processes found\n'),
    ).toEqual([
      { gpuUuid: 'GPU-a', pid: 12, name: 'python3', usedMiB: 100 },
      { gpuUuid: 'GPU-b', pid: 13, name: '/opt/x,y/run', usedMiB: null },
    ]);
    expect(parseComputeApps('')).toEqual([]);
  });

  it('ENGINE_GPU_MEMORY is retried like a failed start', () => {
    expect(classifyFailure(new EngineError('ENGINE_GPU_MEMORY', 'short'))).toBe('retry');
  });
});

describe('sleep mode decisions', () => {
  it('sleeps at level 1 only within the host RAM budget', () => {
    expect(chooseSleepLevel('level1', 10_000, 32_000, 0)).toBe(1);
    expect(chooseSleepLevel('level1', 10_000, 32_000, 22_000)).toBe(1);
    expect(chooseSleepLevel('level1', 10_000, 32_000, 22_001)).toBe(2);
    expect(chooseSleepLevel('level1', null, 32_000, 0)).toBe(2); // need unknown: do not risk host RAM
    expect(chooseSleepLevel('level2', 1, 32_000, 0)).toBe(2);
  });

  it('counts a sleeping engine as not loaded for eviction', () => {
    const engines = [
      { model: 'a', state: 'sleeping' as const, lastUsed: 1 },
      { model: 'b', state: 'ready' as const, lastUsed: 2 },
    ];
    expect(selectEvictions('c', engines, 1)).toEqual(['b']);
    expect(selectEvictions('c', engines, 2)).toEqual([]);
    expect(selectEvictions('a', engines, 1)).toEqual(['b']);
  });
});
