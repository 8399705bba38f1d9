import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { concurrencyOf, modelsFileSchema, modelSchema } from '../../src/config/models.js';
import { buildEngineCommand } from '../../src/engines/commands.js';
import { buildLlamacppCommand, llamaCacheDir, llamaServerBinary } from '../../src/engines/llamacpp.js';

const noEnv = { LLAMA_CACHE_DIR: '/nonexistent-llama-cache' } as NodeJS.ProcessEnv;

describe('buildLlamacppCommand', () => {
  it('builds the llama-server argv with defaults (4 slots, 2048 tokens each, 1 thread)', () => {
    const m = modelSchema.parse({ id: 'tiny', engine: 'llamacpp', path: '/models/t.gguf' });
    const c = buildLlamacppCommand(m, 8123, '127.0.0.1', noEnv);
    expect(c.command).toBe('llama-server');
    expect(c.args).toEqual([
      '-m',
      '/models/t.gguf',
      '--host',
      '127.0.0.1',
      '--port',
      '8123',
      '-t',
      '1',
      '-tb',
      '1',
      '-np',
      '4',
      '-c',
      String(2048 * 4),
      '--alias',
      'tiny',
      '--threads-http',
      '8',
      '--jinja',
    ]);
    expect(c.env).toEqual({});
    expect(concurrencyOf(m)).toBe(4);
  });

  it('takes slots from max_num_seqs (or llamacpp.parallel), context per slot from max_model_len, threads, extra args and env', () => {
    const m = modelSchema.parse({
      id: 'm',
      engine: 'llamacpp',
      path: 'rel/model.gguf',
      options: { max_num_seqs: 16, max_model_len: 512, extra_args: ['--seed', '1'], env: { A: 'b' } },
      llamacpp: { threads: 2 },
    });
    const c = buildLlamacppCommand(m, 1, '0.0.0.0', noEnv);
    expect(c.args.slice(0, 2)).toEqual(['-m', path.resolve('rel/model.gguf')]);
    const flag = (f: string) => c.args[c.args.indexOf(f) + 1];
    expect([flag('--host'), flag('-t'), flag('-tb'), flag('-np'), flag('-c'), flag('--threads-http')]).toEqual([
      '0.0.0.0',
      '2',
      '2',
      '16',
      String(512 * 16),
      '16',
    ]);
    expect(c.args.slice(-2)).toEqual(['--seed', '1']);
    expect(c.env).toEqual({ A: 'b' });
    expect(concurrencyOf(m)).toBe(16);
    const p = modelSchema.parse({ ...m, llamacpp: { parallel: 3 } });
    expect(buildLlamacppCommand(p, 1, '127.0.0.1', noEnv).args).toContain('3');
    expect(concurrencyOf(p)).toBe(3);
  });

  it('passes builtin: paths on as the embedded engine does', () => {
    const m = modelSchema.parse({ id: 'd', engine: 'llamacpp', path: 'builtin:tiny-cycle' });
    expect(buildLlamacppCommand(m, 1, '127.0.0.1', noEnv).args.slice(0, 2)).toEqual(['-m', 'builtin:tiny-cycle']);
  });

  it('finds the binary: model.command, then $LLAMA_SERVER, then the cache, then PATH', () => {
    expect(llamaServerBinary({ command: '/x/llama-server' }, { LLAMA_SERVER: '/y' })).toBe('/x/llama-server');
    expect(llamaServerBinary({}, { ...noEnv, LLAMA_SERVER: '/y' })).toBe('/y');
    expect(llamaServerBinary({}, noEnv)).toBe('llama-server');
    expect(llamaCacheDir({ LLAMA_CACHE_DIR: '/c' })).toBe('/c');
    expect(llamaCacheDir({})).toMatch(/\.cache\/batchwright\/llama\.cpp-/);
  });

  it('is what buildEngineCommand uses for engine: llamacpp', () => {
    const m = modelSchema.parse({ id: 'tiny', engine: 'llamacpp', path: '/t.gguf', command: '/bin/ls' });
    expect(buildEngineCommand(m, 5, '127.0.0.1')).toEqual(buildLlamacppCommand(m, 5, '127.0.0.1'));
  });

  it('validates llamacpp models in models.yaml', () => {
    expect(modelsFileSchema.safeParse({ models: [{ id: 'a', engine: 'llamacpp' }] }).success).toBe(false); // needs a path
    expect(modelsFileSchema.safeParse({ models: [{ id: 'a', engine: 'sim', llamacpp: { threads: 1 } }] }).success).toBe(
      false,
    );
    expect(
      modelsFileSchema.safeParse({ models: [{ id: 'a', engine: 'llamacpp', path: 'builtin:tiny-cycle' }] }).success,
    ).toBe(true);
  });
});
