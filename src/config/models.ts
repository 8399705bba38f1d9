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

export const modelSchema = z
  .object({
    id: z.string().min(1).max(256).describe('The id clients send as `model`.'),
    engine: z.enum(['sim', 'vllm']).describe('Engine kind.'),
    path: z.string().min(1).optional().describe('Model path or hub id the engine loads. Default: the id.'),
    description: z.string().optional(),
    owned_by: z.string().default('batchwright'),
    options: engineOptions.default({ extra_args: [], env: {} }),
    sim: simOptions.optional().describe('Simulator behaviour (engine: sim only).'),
    startup_timeout_s: z.number().positive().default(900).describe('Give up on a start that is not ready in this time.'),
    idle_ttl_s: z.number().min(0).default(0).describe('Stop the engine after this long without requests (0: keep it).'),
    command: z.string().optional().describe('Executable to run instead of the default (`vllm` for vllm).'),
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
    });
  });

export type ModelConfig = z.infer<typeof modelSchema>;
export type ModelsFile = z.infer<typeof modelsFileSchema>;
export type SimOptions = z.infer<typeof simOptions>;
export const simDefaults: SimOptions = simOptions.parse({});

/** Sequences the engine runs at once: what batch dispatch tries to keep in flight. */
export function concurrencyOf(m: ModelConfig): number {
  if (m.options.max_num_seqs) return m.options.max_num_seqs;
  if (m.engine === 'sim') return m.sim?.max_concurrency || 64;
  return 256; // vLLM's default max_num_seqs on GPUs under 70 GiB
}
