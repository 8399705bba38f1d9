import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { envSchema, type Env } from './env.js';
import { modelsFileSchema, type ModelConfig } from './models.js';

export interface Config {
  readonly env: Env;
  readonly models: readonly ModelConfig[];
  readonly dataDir: string;
  readonly modelsFile: string;
}

/** A configuration problem, already formatted for a human: one issue per line. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly issues: string[]) {
    super(issues.join('\n'));
  }
}

function formatIssues(source: string, error: z.ZodError): string[] {
  return error.issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : '(root)';
    return `${source} ${where}: ${i.message}`;
  });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

export function parseEnv(source: NodeJS.ProcessEnv): Env {
  // `REDIS_URL= npm start` means unset, as in most shells' idiom, not "invalid URL".
  const set = Object.fromEntries(Object.entries(source).filter(([, v]) => v !== ''));
  const r = envSchema.safeParse(set);
  if (!r.success) {
    throw new ConfigError(r.error.issues.map((i) => `environment ${i.path.join('.')}: ${i.message}`));
  }
  return r.data;
}

export function parseModelsYaml(text: string, file: string): ModelConfig[] {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`MODELS_FILE ${file}: not valid YAML: ${(err as Error).message}`]);
  }
  const r = modelsFileSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(`MODELS_FILE ${file}`, r.error));
  return r.data.models;
}

export function loadModels(file: string): ModelConfig[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([
      `MODELS_FILE ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'}). Set MODELS_FILE to your models.yaml.`,
    ]);
  }
  return parseModelsYaml(text, file);
}

/** Environment + models.yaml → one validated, deep-frozen Config. Throws ConfigError. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): Config {
  const env = parseEnv(source);
  const modelsFile = path.resolve(env.MODELS_FILE);
  const models = loadModels(modelsFile);
  return deepFreeze({ env, models, dataDir: path.resolve(env.DATA_DIR), modelsFile });
}
