import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_DOCS_PATH, MODELS_EXAMPLE, renderConfigDocs } from '../../scripts/gen-config-docs.js';
import { envSchema } from '../../src/config/env.js';
import { parseModelsYaml } from '../../src/config/load.js';

describe('docs/configuration.md', () => {
  it('is what scripts/gen-config-docs.ts renders from the schemas', () => {
    let onDisk = '';
    try {
      onDisk = readFileSync(CONFIG_DOCS_PATH, 'utf8');
    } catch {
      // missing file: the comparison below fails with the hint
    }
    expect(onDisk, 'docs/configuration.md is out of date: run npm run docs:config').toBe(renderConfigDocs());
  });

  it('lists every environment variable with its description', () => {
    const text = renderConfigDocs();
    for (const [name, field] of Object.entries(envSchema.shape)) {
      expect(text).toContain(`| \`${name}\` |`);
      expect(field.description, `${name} needs a .describe()`).toBeTruthy();
      expect(text).toContain(field.description!.replace(/\|/g, '\\|'));
    }
  });

  it('documents nested models.yaml fields', () => {
    const text = renderConfigDocs();
    for (const field of [
      'options.gpu_memory_utilization',
      'options.extra_args',
      'sim.output_tokens',
      'startup_timeout_s',
    ]) {
      expect(text).toContain(`| \`${field}\` |`);
    }
  });

  it('has a models.yaml example that validates', () => {
    const models = parseModelsYaml(MODELS_EXAMPLE, 'docs/configuration.md example');
    expect(models.map((m) => m.engine)).toEqual(['sim', 'vllm']);
    expect(renderConfigDocs()).toContain(MODELS_EXAMPLE);
  });
});
