import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { modelSchema } from '../../src/config/models.js';
import { buildEngineCommand, simulatorEntry, tsxLoaderUrl } from '../../src/engines/commands.js';

const model = (raw: Record<string, unknown>) => modelSchema.parse(raw);

describe('buildEngineCommand (vllm)', () => {
  it('builds the minimal vllm serve argv from the id', () => {
    expect(buildEngineCommand(model({ id: 'Qwen/Qwen2.5-0.5B', engine: 'vllm' }), 8123)).toEqual({
      command: 'vllm',
      args: [
        'serve',
        'Qwen/Qwen2.5-0.5B',
        '--host',
        '127.0.0.1',
        '--port',
        '8123',
        '--served-model-name',
        'Qwen/Qwen2.5-0.5B',
      ],
      env: {},
    });
  });

  it('passes every option, then extra_args, with path, command and env', () => {
    const m = model({
      id: 'gemma',
      engine: 'vllm',
      path: '/models/gemma-3-12b-awq',
      command: '/opt/venv/bin/vllm',
      options: {
        gpu_memory_utilization: 0.85,
        max_model_len: 8192,
        max_num_seqs: 48,
        quantization: 'awq',
        dtype: 'float16',
        enforce_eager: true,
        extra_args: ['--enable-sleep-mode', '--seed', '7'],
        env: { VLLM_SERVER_DEV_MODE: '1' },
      },
    });
    expect(buildEngineCommand(m, 9000)).toEqual({
      command: '/opt/venv/bin/vllm',
      args: [
        'serve',
        '/models/gemma-3-12b-awq',
        '--host',
        '127.0.0.1',
        '--port',
        '9000',
        '--served-model-name',
        'gemma',
        '--gpu-memory-utilization',
        '0.85',
        '--max-model-len',
        '8192',
        '--max-num-seqs',
        '48',
        '--quantization',
        'awq',
        '--dtype',
        'float16',
        '--enforce-eager',
        '--enable-sleep-mode',
        '--seed',
        '7',
      ],
      env: { VLLM_SERVER_DEV_MODE: '1' },
    });
  });

  it('leaves out --enforce-eager when false', () => {
    const { args } = buildEngineCommand(model({ id: 'm', engine: 'vllm', options: { enforce_eager: false } }), 1);
    expect(args).not.toContain('--enforce-eager');
  });
});

describe('buildEngineCommand (sim)', () => {
  it('runs the simulator under node with absolute tsx loader and entry paths', () => {
    const cmd = buildEngineCommand(
      model({ id: 'sim-a', engine: 'sim', sim: { startup_ms: 5, crash_after: 3, ignore_sigterm: true } }),
      7001,
    );
    expect(cmd.command).toBe(process.execPath);
    expect(cmd.args.slice(0, 3)).toEqual(['--import', tsxLoaderUrl(), simulatorEntry()]);
    expect(tsxLoaderUrl()).toMatch(/^file:\/\/.*tsx/);
    expect(existsSync(fileURLToPath(tsxLoaderUrl()))).toBe(true);
    expect(path.isAbsolute(simulatorEntry())).toBe(true);
    expect(simulatorEntry().endsWith(path.join('simulator', 'main.ts'))).toBe(true);
    expect(cmd.args.slice(3)).toEqual([
      '--port',
      '7001',
      '--host',
      '127.0.0.1',
      '--model',
      'sim-a',
      '--startup-ms',
      '5',
      '--ttft-ms',
      '0',
      '--output-tokens',
      '16',
      '--crash-after',
      '3',
      '--ignore-sigterm',
    ]);
  });

  it('never passes "off" values whose flag would mean something else', () => {
    const { args } = buildEngineCommand(model({ id: 's', engine: 'sim' }), 1);
    for (const flag of [
      '--crash-after',
      '--max-concurrency',
      '--error-rate',
      '--tokens-per-second',
      '--ignore-sigterm',
    ]) {
      expect(args).not.toContain(flag);
    }
  });
});
