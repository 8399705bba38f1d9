import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadModels, parseModelsYaml } from '../../src/config/load.js';

const SHIPPED = fileURLToPath(new URL('../../models.yaml', import.meta.url));

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const minimal = (extra = '') => `models:\n  - id: a\n    engine: sim\n${extra}`;

describe('shipped models.yaml', () => {
  const models = loadModels(SHIPPED);

  it('parses with loadModels and parseModelsYaml alike', () => {
    expect(models.length).toBeGreaterThan(0);
    expect(parseModelsYaml(readFileSync(SHIPPED, 'utf8'), SHIPPED)).toEqual(models);
  });

  it('starts with a model that needs no GPU (the embedded demo model or the simulator)', () => {
    expect(['sim', 'embedded']).toContain(models[0]!.engine);
  });

  it('has production vLLM models that leave GPU headroom', () => {
    const vllm = models.filter((m) => m.engine === 'vllm');
    expect(vllm.length).toBeGreaterThan(0);
    // The CPU models (demo) come first, then only vLLM models.
    for (const m of models.slice(models.findIndex((x) => x.engine === 'vllm'))) expect(m.engine, m.id).toBe('vllm');
    for (const m of vllm) {
      expect(m.options.gpu_memory_utilization, `${m.id} gpu_memory_utilization`).toBeDefined();
      expect(m.options.gpu_memory_utilization!, m.id).toBeLessThanOrEqual(0.95);
      expect(m.sim, `${m.id} must not have sim options`).toBeUndefined();
    }
  });

  it('has unique ids', () => {
    const ids = models.map((m) => m.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('models.yaml validation errors', () => {
  it('names the file and the field path', () => {
    const e = configError(() => parseModelsYaml('models:\n  - id: a\n    engine: tgi\n', '/etc/bw/models.yaml'));
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toContain('/etc/bw/models.yaml');
    expect(e.issues[0]).toContain('models.0.engine');
    expect(e.message).toBe(e.issues.join('\n'));
  });

  it('reports every problem, each with its own path', () => {
    const text =
      'models:\n  - id: a\n    engine: sim\n  - id: ""\n    engine: vllm\n    options:\n      gpu_memory_utilization: 1.5\n';
    const e = configError(() => parseModelsYaml(text, 'm.yaml'));
    const joined = e.issues.join('\n');
    expect(joined).toContain('models.1.id');
    expect(joined).toContain('models.1.options.gpu_memory_utilization');
    for (const issue of e.issues) expect(issue.startsWith('MODELS_FILE m.yaml ')).toBe(true);
  });

  it('rejects duplicate ids', () => {
    const e = configError(() => parseModelsYaml(`${minimal()}  - id: a\n    engine: vllm\n`, 'm.yaml'));
    expect(e.issues.join('\n')).toMatch(/models\.1\.id.*duplicate model id "a"/);
  });

  it('rejects unknown keys at every level', () => {
    expect(configError(() => parseModelsYaml(minimal('    gpus: 2\n'), 'm.yaml')).issues.join('\n')).toMatch(
      /models\.0.*gpus/,
    );
    expect(
      configError(() => parseModelsYaml(minimal('    options:\n      tensor_parallel: 2\n'), 'm.yaml')).issues.join(
        '\n',
      ),
    ).toMatch(/models\.0\.options.*tensor_parallel/);
    expect(configError(() => parseModelsYaml(`${minimal()}extra: true\n`, 'm.yaml')).issues.join('\n')).toMatch(
      /extra/,
    );
  });

  it('allows sim options only with engine: sim', () => {
    const e = configError(() =>
      parseModelsYaml('models:\n  - id: a\n    engine: vllm\n    sim:\n      output_tokens: 4\n', 'm.yaml'),
    );
    expect(e.issues.join('\n')).toContain('models.0.sim');
  });

  it('rejects an empty list, YAML syntax errors and a missing file', () => {
    expect(configError(() => parseModelsYaml('models: []\n', 'm.yaml')).issues[0]).toContain('models');
    expect(configError(() => parseModelsYaml('models: [\n', 'bad.yaml')).issues[0]).toMatch(
      /bad\.yaml.*not valid YAML/,
    );
    expect(configError(() => loadModels('/nonexistent/models.yaml')).issues[0]).toMatch(
      /\/nonexistent\/models\.yaml.*cannot read/,
    );
  });

  it('applies defaults', () => {
    const [m] = parseModelsYaml(minimal(), 'm.yaml');
    expect(m!.options).toEqual({ extra_args: [], env: {} });
    expect(m!.owned_by).toBe('batchwright');
    expect(m!.idle_ttl_s).toBe(0);
  });
});
