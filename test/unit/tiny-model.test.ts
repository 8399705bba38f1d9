import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseModelsYaml } from '../../src/config/load.js';
import { modelSchema } from '../../src/config/models.js';
import { buildEngineCommand, embeddedEntry, tsxLoaderUrl } from '../../src/engines/commands.js';
import { ensureTinyModel, prepareBuiltinModels, tinyModelPath } from '../../src/engines/tiny-model.js';

/** sha256 of scripts/gen-tiny-gguf.mjs's default (cycle) output: any change to the generator shows here. */
const TINY_SHA256 = '215332833be44045fa700304ee7e104291b184388491974254bdfc1435d1aea1';
const TINY_BYTES = 569_760;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'tiny-model-'));
  dirs.push(d);
  return d;
}
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe('ensureTinyModel', () => {
  it('writes DATA_DIR/models/tiny-cycle.gguf, byte-identical on every generation', async () => {
    const a = tempDir();
    const b = tempDir();
    const [pa, pb] = [await ensureTinyModel(a), await ensureTinyModel(b)];
    expect(pa).toBe(path.join(a, 'models', 'tiny-cycle.gguf'));
    expect(pa).toBe(tinyModelPath(a));
    expect(statSync(pa).size).toBe(TINY_BYTES);
    expect(readFileSync(pa).subarray(0, 4).toString('latin1')).toBe('GGUF');
    expect(sha256(pa)).toBe(TINY_SHA256);
    expect(sha256(pb)).toBe(TINY_SHA256);
  });

  it('is idempotent: an existing file is kept as it is', async () => {
    const dir = tempDir();
    const p = await ensureTinyModel(dir);
    const before = statSync(p);
    expect(await ensureTinyModel(dir)).toBe(p);
    const after = statSync(p);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
  });

  it('is atomic: concurrent calls all get the complete file and leave no temp files', async () => {
    const dir = tempDir();
    const paths = await Promise.all([ensureTinyModel(dir), ensureTinyModel(dir), ensureTinyModel(dir)]);
    expect(new Set(paths).size).toBe(1);
    expect(sha256(paths[0])).toBe(TINY_SHA256);
    expect(readdirSync(path.join(dir, 'models'))).toEqual(['tiny-cycle.gguf']);
  });

  it('fails with a clear error, leaving nothing behind, when it cannot write', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'models'), 'not a folder');
    await expect(ensureTinyModel(dir)).rejects.toThrow(/EEXIST|ENOTDIR|not a directory|cannot generate/);
    expect(readdirSync(dir)).toEqual(['models']);
  });
});

describe('prepareBuiltinModels', () => {
  it('resolves builtin:tiny-cycle to the generated file and leaves other models alone', async () => {
    const dir = tempDir();
    const models = parseModelsYaml(
      'models:\n  - id: tiny\n    engine: embedded\n    path: builtin:tiny-cycle\n  - id: gguf\n    engine: embedded\n    path: /models/x.gguf\n  - id: s\n    engine: sim\n',
      'm.yaml',
    );
    const out = await prepareBuiltinModels(models, dir);
    expect(out[0]).toEqual({ ...models[0], path: tinyModelPath(dir) });
    expect(out[1]).toBe(models[1]);
    expect(out[2]).toBe(models[2]);
    expect(sha256(tinyModelPath(dir))).toBe(TINY_SHA256);
  });

  it('keeps the builtin: path and logs when the file cannot be made', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'models'), 'not a folder');
    const [m] = parseModelsYaml(
      'models:\n  - id: tiny\n    engine: embedded\n    path: builtin:tiny-cycle\n',
      'm.yaml',
    );
    const logged: unknown[] = [];
    const log = { error: (...args: unknown[]) => void logged.push(args) } as unknown as Parameters<
      typeof prepareBuiltinModels
    >[2];
    const out = await prepareBuiltinModels([m!], dir, log);
    expect(out[0]!.path).toBe('builtin:tiny-cycle');
    expect(logged).toHaveLength(1);
  });
});

describe('models.yaml: engine embedded', () => {
  it('needs a path, knows its builtin names, and keeps embedded options to engine: embedded', () => {
    const issues = (yaml: string) => {
      try {
        parseModelsYaml(yaml, 'm.yaml');
        return '';
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(issues('models:\n  - id: a\n    engine: embedded\n')).toMatch(/models\.0\.path.*needs path/);
    expect(issues('models:\n  - id: a\n    engine: embedded\n    path: builtin:nope\n')).toMatch(
      /unknown builtin model "nope"/,
    );
    expect(issues('models:\n  - id: a\n    engine: vllm\n    path: builtin:tiny-cycle\n')).toMatch(
      /builtin: paths need engine: embedded/,
    );
    expect(issues('models:\n  - id: a\n    engine: sim\n    embedded: { threads: 2 }\n')).toMatch(
      /models\.0\.embedded/,
    );
    expect(
      issues('models:\n  - id: a\n    engine: embedded\n    path: /m.gguf\n    embedded: { threads: 0 }\n'),
    ).toMatch(/threads/);
    expect(issues('models:\n  - id: a\n    engine: embedded\n    path: /m.gguf\n    embedded: { threads: 2 }\n')).toBe(
      '',
    );
  });

  it('builds the engine command: node + tsx + embedded/main.ts, one thread and 4 sequences by default', () => {
    const cmd = buildEngineCommand(modelSchema.parse({ id: 'tiny', engine: 'embedded', path: '/m/tiny.gguf' }), 7001);
    expect(cmd).toEqual({
      command: process.execPath,
      args: [
        '--import',
        tsxLoaderUrl(),
        embeddedEntry(),
        '--port',
        '7001',
        '--host',
        '127.0.0.1',
        '--model',
        'tiny',
        '--gguf',
        '/m/tiny.gguf',
        '--threads',
        '1',
        '--parallel',
        '4',
      ],
      env: {},
    });
    expect(embeddedEntry()).toMatch(/src\/engines\/embedded\/main\.ts$/);
    const full = buildEngineCommand(
      modelSchema.parse({
        id: 'm',
        engine: 'embedded',
        path: 'rel/x.gguf',
        embedded: { threads: 2 },
        options: { max_num_seqs: 8, max_model_len: 1024, extra_args: ['--x'], env: { A: '1' } },
      }),
      1,
      '0.0.0.0',
    );
    expect(full.args.slice(3)).toEqual([
      '--port',
      '1',
      '--host',
      '0.0.0.0',
      '--model',
      'm',
      '--gguf',
      path.resolve('rel/x.gguf'),
      '--threads',
      '2',
      '--parallel',
      '8',
      '--ctx',
      '1024',
      '--x',
    ]);
    expect(full.env).toEqual({ A: '1' });
  });
});
