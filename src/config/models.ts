import { z } from 'zod';

const engineOptions = z
  .object({
    gpu_memory_utilization: z.number().gt(0).lte(1).optional().describe('Fraction of TOTAL GPU memory vLLM may use.'),
    max_model_len: z.number().int().positive().optional().describe('Context length (prompt + output tokens).'),
    max_num_seqs: z.number().int().positive().optional().describe('Sequences the engine runs at once; batch dispatch keeps this many in flight.'),
    quantization: z.string().optional(),
    dtype: z.string().optional(),
    enforce_eager: z.boolean().optional(),
    extra_args: z.array(z.string()).default([]).describe('Extra command-line arguments, appended as given.'),
    env: z.record(z.string(), z.string()).default({}).describe('Extra environment variables for the engine process.'),
    sleep_mode: z
      .enum(['off', 'level1', 'level2'])
      .optional()
      .describe(
        'vLLM only. Unset or "off": an evicted engine is stopped. "level1"/"level2": it is put to sleep instead and woken up (seconds, not a cold start) when its model is needed again; "level1" keeps the weights in host RAM while HOST_RAM_BUDGET_MB allows (else level 2), "level2" drops them. Adds --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1, which open unauthenticated dev endpoints: such an engine always listens on 127.0.0.1, whatever ENGINE_BIND_HOST says, and a --host in extra_args is dropped.',
      ),
    host_ram_mb: z.number().int().positive().optional().describe('Host RAM (MiB) the weights take while sleeping at level 1, counted against HOST_RAM_BUDGET_MB. Default: gpu_memory_utilization × the total memory of its GPUs.'),
  })
  .strict();

const simOptions = z
  .object({
    startup_ms: z.number().int().min(0).default(0),
    ttft_ms: z.number().min(0).default(0),
    tokens_per_second: z.number().min(0).default(0).describe('0 means as fast as possible.'),
    max_concurrency: z.number().int().min(0).default(0).describe('0 means unlimited.'),
    error_rate: z.number().min(0).max(1).default(0),
    ignore_sigterm: z.boolean().default(false),
    crash_after: z.number().int().min(0).default(0).describe('Exit after this many requests (0: never).'),
    output_tokens: z.number().int().min(1).default(16),
  })
  .strict();

const embeddedOptions = z
  .object({
    threads: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe('CPU threads llama.cpp uses. Keep 1 on small machines: more threads than free cores collapses throughput.'),
  })
  .strict();

const llamacppOptions = z
  .object({
    threads: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe('CPU threads llama-server uses (-t and -tb). Keep 1 on small machines.'),
    parallel: z.number().int().min(1).optional().describe('Slots (-np): requests served at once. Default: options.max_num_seqs, else 4.'),
  })
  .strict();

/** GGUF models the worker generates itself (`path: builtin:<name>`), no download needed. */
export const BUILTIN_MODELS = ['tiny-cycle'] as const;
export const BUILTIN_PREFIX = 'builtin:';

export const modelSchema = z
  .object({
    id: z.string().min(1).max(256).describe('The id clients send as `model`.'),
    engine: z
      .enum(['sim', 'vllm', 'embedded', 'llamacpp'])
      .describe('Engine kind: `vllm`, `embedded` (llama.cpp in Node, CPU, GGUF files), `llamacpp` (llama.cpp\'s llama-server, CPU, GGUF files) or `sim`.'),
    path: z
      .string()
      .min(1)
      .optional()
      .describe('Model path or hub id the engine loads. Default: the id. `embedded`: a GGUF file, or `builtin:tiny-cycle` (a tiny generated model).'),
    description: z.string().optional(),
    owned_by: z.string().default('batchwright'),
    options: engineOptions.default({ extra_args: [], env: {} }),
    sim: simOptions.optional().describe('Simulator behaviour (engine: sim only).'),
    embedded: embeddedOptions.optional().describe('llama.cpp settings (engine: embedded only).'),
    llamacpp: llamacppOptions.optional().describe('llama-server settings (engine: llamacpp only).'),
    startup_timeout_s: z.number().positive().default(900).describe('Give up on a start that is not ready in this time.'),
    idle_ttl_s: z.number().min(0).default(0).describe('Stop the engine after this long without requests (0: keep it).'),
    command: z.string().optional().describe('Executable to run instead of the default (`vllm` for vllm; for llamacpp: $LLAMA_SERVER, else the binary scripts/build-llama-server.sh caches, else `llama-server` on PATH).'),
  })
  .strict();

export const modelsFileSchema = z
  .object({
    models: z.array(modelSchema).min(1),
  })
  .strict()
  .superRefine((file, ctx) => {
    const seen = new Set<string>();
    file.models.forEach((m, i) => {
      if (seen.has(m.id)) ctx.addIssue({ code: 'custom', path: ['models', i, 'id'], message: `duplicate model id "${m.id}"` });
      seen.add(m.id);
      if (m.sim && m.engine !== 'sim') ctx.addIssue({ code: 'custom', path: ['models', i, 'sim'], message: 'only allowed with engine: sim' });
      if (m.embedded && m.engine !== 'embedded') ctx.addIssue({ code: 'custom', path: ['models', i, 'embedded'], message: 'only allowed with engine: embedded' });
      if (m.llamacpp && m.engine !== 'llamacpp') ctx.addIssue({ code: 'custom', path: ['models', i, 'llamacpp'], message: 'only allowed with engine: llamacpp' });
      if (m.engine === 'llamacpp' && !m.path) ctx.addIssue({ code: 'custom', path: ['models', i, 'path'], message: 'engine: llamacpp needs path: a GGUF file or builtin:tiny-cycle' });
      if (m.engine === 'embedded' && !m.path) ctx.addIssue({ code: 'custom', path: ['models', i, 'path'], message: 'engine: embedded needs path: a GGUF file or builtin:tiny-cycle' });
      if (m.path?.startsWith(BUILTIN_PREFIX)) {
        const name = m.path.slice(BUILTIN_PREFIX.length);
        if (m.engine !== 'embedded' && m.engine !== 'llamacpp') ctx.addIssue({ code: 'custom', path: ['models', i, 'path'], message: `${BUILTIN_PREFIX} paths need engine: embedded or llamacpp` });
        else if (!(BUILTIN_MODELS as readonly string[]).includes(name)) {
          ctx.addIssue({ code: 'custom', path: ['models', i, 'path'], message: `unknown builtin model "${name}" (known: ${BUILTIN_MODELS.join(', ')})` });
        }
      }
    });
  });

export type ModelConfig = z.infer<typeof modelSchema>;
export type ModelsFile = z.infer<typeof modelsFileSchema>;
export type SimOptions = z.infer<typeof simOptions>;
export type EmbeddedOptions = z.infer<typeof embeddedOptions>;
export const embeddedDefaults: EmbeddedOptions = embeddedOptions.parse({});
export type LlamacppOptions = z.infer<typeof llamacppOptions>;
export const llamacppDefaults: LlamacppOptions = llamacppOptions.parse({});
/** Slots (-np) llama-server runs when neither llamacpp.parallel nor max_num_seqs is set. */
export const LLAMACPP_DEFAULT_PARALLEL = 4;
/** Sequences the embedded engine runs at once when max_num_seqs is not set. */
export const EMBEDDED_DEFAULT_PARALLEL = 4;
export const simDefaults: SimOptions = simOptions.parse({});

/** Sequences the engine runs at once: what batch dispatch tries to keep in flight. */
export function concurrencyOf(m: ModelConfig): number {
  if (m.engine === 'llamacpp') return m.llamacpp?.parallel ?? m.options.max_num_seqs ?? LLAMACPP_DEFAULT_PARALLEL;
  if (m.options.max_num_seqs) return m.options.max_num_seqs;
  if (m.engine === 'sim') return m.sim?.max_concurrency || 64;
  if (m.engine === 'embedded') return EMBEDDED_DEFAULT_PARALLEL;
  return 256; // vLLM's default max_num_seqs on GPUs under 70 GiB
}
