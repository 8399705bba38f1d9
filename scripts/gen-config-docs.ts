/**
 * Renders docs/configuration.md from the zod schemas in src/config (env.ts, models.ts).
 * `npm run docs:config` rewrites the file; test/unit/docs-config.test.ts fails when the
 * committed file and the schemas drift apart.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { envSchema } from '../src/config/env.js';
import { modelSchema } from '../src/config/models.js';

export const CONFIG_DOCS_PATH = fileURLToPath(new URL('../docs/configuration.md', import.meta.url));

/** The subset of JSON Schema that z.toJSONSchema emits for these schemas. */
interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  required?: string[];
  anyOf?: JsonSchema[];
}

/**
 * Text for models.yaml fields whose schema has no `.describe()`. A `.describe()` added in
 * src/config/models.ts wins over these.
 */
const FALLBACK_DESCRIPTIONS: Record<string, string> = {
  description: 'Free text returned as `description` by `GET /v1/models`; not sent to the engine.',
  owned_by: '`owned_by` of the model in `GET /v1/models`.',
  options:
    'Engine options. vLLM gets each set field as its flag; the simulator uses `max_num_seqs`, `max_model_len`, `extra_args` and `env`.',
  'options.quantization': 'vLLM `--quantization` (e.g. `awq`, `fp8`, `gptq`).',
  'options.dtype': 'vLLM `--dtype` (e.g. `auto`, `bfloat16`, `float16`).',
  'options.enforce_eager': 'vLLM `--enforce-eager` (no CUDA graphs: less memory, slower).',
  'sim.startup_ms': 'Milliseconds the simulator answers 503 after binding its port (a slow model load).',
  'sim.ttft_ms': 'Delay before the first token, in milliseconds.',
  'sim.error_rate': 'Fraction (0..1) of inference requests answered with HTTP 500.',
  'sim.ignore_sigterm': 'Ignore SIGTERM, so only SIGKILL stops it (tests the stop deadline).',
  'sim.output_tokens': 'Tokens a completion produces unless `max_tokens` cuts it.',
};

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

function code(text: string): string {
  return text.includes('`') ? `\`\` ${text} \`\`` : `\`${text}\``;
}

function humanBytes(n: number): string | null {
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return null;
}

function formatDefault(name: string, s: JsonSchema): string {
  if (!('default' in s)) return '—';
  const d = s.default;
  if (typeof d === 'number') {
    const human = /BYTES$/.test(name) ? humanBytes(d) : null;
    return human ? `${code(String(d))} (${human})` : code(String(d));
  }
  return code(typeof d === 'string' ? d : JSON.stringify(d));
}

function typeName(s: JsonSchema): string {
  const t = Array.isArray(s.type) ? s.type.join(' or ') : s.type;
  return t ?? 'any';
}

/** "integer, 0–65535", "one of `a`, `b`", "string matching `^x$`" ... */
function describeType(s: JsonSchema): string {
  if (s.enum) return `one of ${s.enum.map((v) => code(String(v))).join(', ')}`;
  if (s.anyOf) return s.anyOf.map(describeType).join(' or ');
  const t = typeName(s);
  if (t === 'integer' || t === 'number') {
    const lo =
      s.exclusiveMinimum !== undefined ? `> ${s.exclusiveMinimum}` : s.minimum !== undefined ? `≥ ${s.minimum}` : null;
    const hi =
      s.exclusiveMaximum !== undefined
        ? `< ${s.exclusiveMaximum}`
        : s.maximum !== undefined && s.maximum < MAX_SAFE
          ? `≤ ${s.maximum}`
          : null;
    if (s.minimum !== undefined && s.maximum !== undefined && s.maximum < MAX_SAFE)
      return `${t}, ${s.minimum}–${s.maximum}`;
    const bounds = [lo, hi].filter(Boolean).join(', ');
    return bounds ? `${t}, ${bounds}` : t;
  }
  if (t === 'string') {
    if (s.pattern) return `string matching ${code(s.pattern.replace(/\\\//g, '/'))}`;
    const parts: string[] = [];
    if (s.minLength === 1) parts.push('non-empty');
    if (s.maxLength !== undefined) parts.push(`at most ${s.maxLength} characters`);
    return parts.length ? `string (${parts.join(', ')})` : 'string';
  }
  if (t === 'array') return `list of ${s.items ? describeType(s.items) : 'any'}`;
  if (t === 'object') {
    if (s.properties) return 'mapping (fields below)';
    if (s.additionalProperties && typeof s.additionalProperties === 'object')
      return `mapping of string → ${describeType(s.additionalProperties)}`;
    return 'mapping';
  }
  return t;
}

function toJson(schema: z.ZodType): JsonSchema {
  // io: 'input' documents what a user writes (before coercion and transforms).
  return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
}

function envTable(): string[] {
  const json = toJson(envSchema);
  const rows = ['| Variable | Default | Type / allowed values | Description |', '| --- | --- | --- | --- |'];
  for (const [name, s] of Object.entries(json.properties ?? {})) {
    const def = 'default' in s ? formatDefault(name, s) : 'unset';
    rows.push(`| ${code(name)} | ${cell(def)} | ${cell(describeType(s))} | ${cell(s.description ?? '')} |`);
  }
  return rows;
}

function fieldTable(obj: JsonSchema, prefix: string): string[] {
  const required = new Set(obj.required ?? []);
  const rows = [
    '| Field | Required | Default | Type / allowed values | Description |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const [name, s] of Object.entries(obj.properties ?? {})) {
    const key = prefix ? `${prefix}.${name}` : name;
    const description = s.description ?? FALLBACK_DESCRIPTIONS[key] ?? '';
    const req = required.has(name) ? 'yes' : 'no';
    rows.push(
      `| ${code(key)} | ${req} | ${cell(formatDefault(name, s))} | ${cell(describeType(s))} | ${cell(description)} |`,
    );
  }
  return rows;
}

export const MODELS_EXAMPLE = `models:
  # Runs anywhere: the bundled simulator speaks vLLM's HTTP API with synthetic answers.
  - id: demo-sim
    engine: sim
    startup_timeout_s: 30
    options:
      max_num_seqs: 64
      max_model_len: 4096
    sim:
      output_tokens: 16

  # A vLLM model on one GPU.
  - id: llama-3.1-8b-instruct
    engine: vllm
    path: meta-llama/Llama-3.1-8B-Instruct
    startup_timeout_s: 600
    idle_ttl_s: 1800
    options:
      gpu_memory_utilization: 0.9
      max_model_len: 8192
      max_num_seqs: 64
      quantization: fp8
      extra_args: ["--enable-prefix-caching"]
      env:
        VLLM_LOGGING_LEVEL: WARNING`;

/** The whole of docs/configuration.md. Pure: same schemas, same text. */
export function renderConfigDocs(): string {
  const model = toJson(modelSchema);
  // A field that is a mapping, or a name-or-mapping (`launcher`), gets its own table.
  const nested = Object.entries(model.properties ?? {}).flatMap(([name, s]): [string, JsonSchema][] => {
    if (s.properties) return [[name, s]];
    const obj = s.anyOf?.find((x) => x.properties);
    return obj ? [[name, { ...obj, description: s.description }]] : [];
  });
  const out: string[] = [
    '<!-- Generated by scripts/gen-config-docs.ts from src/config/env.ts and src/config/models.ts. -->',
    '<!-- Do not edit by hand: change the schemas, then run `npm run docs:config`. -->',
    '',
    '# Configuration',
    '',
    'batchwright reads two things at start: **environment variables** (server, queue and limits) and',
    '**`models.yaml`** (the model registry: every model clients may name as `model`). Both are validated',
    'once, before anything starts. On a problem the process prints every issue, naming the variable or',
    'the file and the field path (for example `MODELS_FILE ./models.yaml models.0.engine: ...`), and exits',
    'with status 1.',
    '',
    'Defaults suit a laptop: the API listens on `127.0.0.1:4080`, data goes to `./data`, and without',
    '`REDIS_URL` a private `redis-server` is started under `DATA_DIR`.',
    '',
    '## Environment variables',
    '',
    'Numbers are read from their decimal text. "unset" means the variable has no default and the',
    'behaviour described applies when it is missing.',
    '',
    ...envTable(),
    '',
    '## models.yaml',
    '',
    'The file named by `MODELS_FILE` holds one key, `models`: a list of at least one model. Unknown keys',
    'are rejected at every level, model ids must be unique, and `sim` is only allowed with `engine: sim`.',
    'The first model in the shipped `models.yaml` uses the simulator, so the server runs without a GPU.',
    'An optional top-level `profiles:` mapping holds named `launcher` blocks (engines run as SLURM or PBS',
    'jobs) that models name with `launcher: <profile>`; see [hpc.md](hpc.md).',
    '',
    '### Model fields',
    '',
    ...fieldTable(model, ''),
  ];
  for (const [name, s] of nested) {
    out.push('', `### \`${name}\``, '');
    const about = s.description ?? FALLBACK_DESCRIPTIONS[name];
    if (about) out.push(cell(about), '');
    out.push(...fieldTable(s, name));
  }
  out.push('', '### Example', '', '```yaml', MODELS_EXAMPLE, '```', '');
  return out.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  writeFileSync(CONFIG_DOCS_PATH, renderConfigDocs());
  console.log(`wrote ${path.relative(process.cwd(), CONFIG_DOCS_PATH)}`);
}
