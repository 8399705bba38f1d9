import { z } from 'zod';

const engineOptions = z
  .object({
    gpu_memory_utilization: z.number().gt(0).lte(1).optional().describe('Fraction of TOTAL GPU memory vLLM may use.'),
    max_model_len: z.number().int().positive().optional().describe('Context length (prompt + output tokens).'),
    max_num_seqs: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Sequences the engine runs at once; batch dispatch keeps this many in flight.'),
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
    host_ram_mb: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'Host RAM (MiB) the weights take while sleeping at level 1, counted against HOST_RAM_BUDGET_MB. Default: gpu_memory_utilization × the total memory of its GPUs.',
      ),
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
      .describe(
        'CPU threads llama.cpp uses. Keep 1 on small machines: more threads than free cores collapses throughput.',
      ),
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
    parallel: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Slots (-np): requests served at once. Default: options.max_num_seqs, else 4.'),
  })
  .strict();

/**
 * Where an engine runs when it is not a child of the worker: a SLURM or PBS job. Set per model
 * (`launcher: {...}`) or as a named profile (`profiles: {name: {...}}` at the top of models.yaml,
 * used as `launcher: name` or `launcher: {profile: name, ...overrides}`).
 */
export const launcherSchema = z
  .object({
    kind: z
      .enum(['slurm', 'pbs'])
      .describe('The batch system: `slurm` (sbatch/squeue/sinfo/scancel) or `pbs` (qsub/qstat/pbsnodes/qdel).'),
    partition: z
      .string()
      .min(1)
      .optional()
      .describe("SLURM partition (`--partition`) or PBS queue (`-q`). Default: the cluster's default."),
    account: z.string().min(1).optional().describe('Account/project to charge (`--account`, PBS `-A`).'),
    qos: z.string().min(1).optional().describe('SLURM quality of service (`--qos`).'),
    time: z
      .string()
      .regex(/^(\d+-)?\d+(:\d{1,2}){0,2}$/, 'a time limit like 30, 1:30:00 or 2-00:00:00')
      .optional()
      .describe(
        'Time limit (`--time`, PBS `walltime`): minutes, H:MM:SS or D-HH:MM:SS. Needed for SLURM start estimates and for replacing a job before it ends.',
      ),
    gpus: z
      .union([z.string().min(1), z.number().int().min(0)])
      .optional()
      .describe('GPUs per node: `--gpus-per-node=<value>` (`4`, `A40:1`, `h100:4`); PBS `ngpus=` (a number).'),
    cpus: z.number().int().positive().optional().describe('CPUs for the engine (`--cpus-per-task`, PBS `ncpus`).'),
    mem: z
      .string()
      .regex(/^\d+[KMGT]?B?$/i, 'a size like 64G or 16000M')
      .optional()
      .describe('Memory per node (`--mem`, PBS `mem`).'),
    nodes: z
      .number()
      .int()
      .positive()
      .default(1)
      .describe('Nodes. More than 1 starts one vLLM spanning them (Ray head on the first, workers on the others).'),
    tensor_parallel_size: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('vLLM `--tensor-parallel-size` in the job. Default for nodes > 1: the GPUs per node.'),
    pipeline_parallel_size: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('vLLM `--pipeline-parallel-size` in the job. Default for nodes > 1: the number of nodes.'),
    setup: z
      .array(z.string())
      .default([])
      .describe('Shell lines run in the job before the engine (module load, source venv/bin/activate).'),
    submit_args: z
      .array(z.string())
      .default([])
      .describe('Extra sbatch/qsub options, one per item, e.g. `--constraint=a40` or `-l place=scatter`.'),
    engine_command: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Shell command that starts the engine in the job, instead of the one built from the model. `{port}`, `{host}`, `{model}` and `{path}` are replaced.',
      ),
    bind_host: z
      .string()
      .default('0.0.0.0')
      .describe(
        'Interface the engine listens on in the job (it must be reachable from the worker, or through the tunnel).',
      ),
    port: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .optional()
      .describe('Port the engine listens on. Default: a free one, chosen on the node.'),
    monitor_url: z
      .string()
      .optional()
      .describe(
        'Job-monitoring page shown while the job waits and runs; `{job_id}`, `{user}`, `{partition}` and `{node}` are replaced, e.g. https://job.c3se.chalmers.se/alvis/{job_id}.',
      ),
    tunnel: z
      .object({
        host: z.string().min(1).describe('The ssh host that reaches the compute nodes (a login node).'),
        user: z.string().min(1).optional(),
        port: z.number().int().positive().optional().describe('ssh port of that host.'),
        identity_file: z.string().optional(),
        options: z.array(z.string()).default([]).describe('Extra ssh arguments (e.g. `-o ProxyJump=gw`).'),
      })
      .strict()
      .optional()
      .describe(
        'Reach the engine through `ssh -N -L` via this host when compute nodes are not directly reachable from the worker. Fields: `host`, `user`, `port`, `identity_file`, `options` (see docs/hpc.md).',
      ),
    stage: z
      .object({
        from: z.string().min(1).describe('Model weights on shared storage (a folder or a file).'),
        to: z
          .string()
          .min(1)
          .describe('Node-local destination, e.g. `$TMPDIR/models/llama` (shell variables are expanded on the node).'),
        method: z
          .enum(['copy', 'rsync', 'sbcast'])
          .default('copy')
          .describe('`copy` (cp -r), `rsync -a`, or `sbcast` (SLURM, a single file, to every node of the job).'),
      })
      .strict()
      .optional()
      .describe(
        'Copy the weights to node-local storage before the engine starts; the engine then loads them from `to`. Fields: `from`, `to`, `method` (`copy`, `rsync`, `sbcast`; see docs/hpc.md).',
      ),
    cache: z
      .object({
        hf_home: z.string().optional().describe('HF_HOME (Hugging Face hub cache).'),
        triton_cache_dir: z.string().optional().describe('TRITON_CACHE_DIR.'),
        vllm_cache_root: z.string().optional().describe('VLLM_CACHE_ROOT (torch.compile cache).'),
        xdg_cache_home: z.string().optional().describe('XDG_CACHE_HOME.'),
      })
      .strict()
      .default({})
      .describe(
        'Cache folders exported in the job: `hf_home` (HF_HOME), `triton_cache_dir` (TRITON_CACHE_DIR), `vllm_cache_root` (VLLM_CACHE_ROOT), `xdg_cache_home` (XDG_CACHE_HOME).',
      ),
    env: z.record(z.string(), z.string()).default({}).describe('Extra environment variables exported in the job.'),
    poll_s: z.number().positive().default(5).describe("How often the job's state is read while it waits and runs."),
    command_timeout_s: z
      .number()
      .positive()
      .default(30)
      .describe(
        'Give up on one sbatch/squeue/sinfo/scancel call after this long (a down controller takes ~10-20 s to fail).',
      ),
    queue_timeout_s: z
      .number()
      .min(0)
      .default(0)
      .describe(
        'Cancel a job still waiting in the queue after this long (0: wait as long as it takes). startup_timeout_s counts from when the job runs.',
      ),
    replace_before_s: z
      .number()
      .min(0)
      .default(300)
      .describe(
        'Start a replacement job when the running one has less than this left of its time limit, then move to it and cancel the old one (0: never; the job just ends and its requests are retried).',
      ),
    on_shutdown: z
      .enum(['cancel', 'keep'])
      .default('cancel')
      .describe(
        'On worker shutdown: `cancel` the job (release the allocation), or `keep` it so the next worker start reconnects to it. A crashed worker always reconnects.',
      ),
    bin_dir: z
      .string()
      .optional()
      .describe('Folder of the sbatch/squeue/... (or qsub/qstat/...) commands. Default: PATH.'),
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
      .describe(
        "Engine kind: `vllm`, `embedded` (llama.cpp in Node, CPU, GGUF files), `llamacpp` (llama.cpp's llama-server, CPU, GGUF files) or `sim`.",
      ),
    path: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Model path or hub id the engine loads. Default: the id. `embedded`: a GGUF file, or `builtin:tiny-cycle` (a tiny generated model).',
      ),
    description: z.string().optional(),
    owned_by: z.string().default('batchwright'),
    options: engineOptions.default({ extra_args: [], env: {} }),
    sim: simOptions.optional().describe('Simulator behaviour (engine: sim only).'),
    embedded: embeddedOptions.optional().describe('llama.cpp settings (engine: embedded only).'),
    llamacpp: llamacppOptions.optional().describe('llama-server settings (engine: llamacpp only).'),
    startup_timeout_s: z
      .number()
      .positive()
      .default(900)
      .describe('Give up on a start that is not ready in this time.'),
    idle_ttl_s: z.number().min(0).default(0).describe('Stop the engine after this long without requests (0: keep it).'),
    command: z
      .string()
      .optional()
      .describe(
        'Executable to run instead of the default (`vllm` for vllm; for llamacpp: $LLAMA_SERVER, else the binary scripts/build-llama-server.sh caches, else `llama-server` on PATH).',
      ),
    launcher: z
      .union([z.string().min(1), launcherSchema])
      .optional()
      .describe(
        'Run the engine as a SLURM/PBS job instead of a child of the worker: a `profiles:` name, or a launcher block (optionally `profile: name` plus overrides). Unset: a local child process.',
      ),
  })
  .strict();

export const modelsFileSchema = z
  .preprocess(
    resolveProfiles,
    z
      .object({
        profiles: z
          .record(z.string(), z.unknown())
          .optional()
          .describe('Named launcher blocks that models refer to with `launcher: <name>`.'),
        models: z.array(modelSchema).min(1),
      })
      .strict(),
  )
  .superRefine((file, ctx) => {
    const seen = new Set<string>();
    const profiles = Object.keys(file.profiles ?? {});
    file.models.forEach((m, i) => {
      if (typeof m.launcher === 'string')
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'launcher'],
          message: `unknown launcher profile "${m.launcher}" (profiles: ${profiles.join(', ') || 'none'})`,
        });
      if (seen.has(m.id))
        ctx.addIssue({ code: 'custom', path: ['models', i, 'id'], message: `duplicate model id "${m.id}"` });
      seen.add(m.id);
      if (m.sim && m.engine !== 'sim')
        ctx.addIssue({ code: 'custom', path: ['models', i, 'sim'], message: 'only allowed with engine: sim' });
      if (m.embedded && m.engine !== 'embedded')
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'embedded'],
          message: 'only allowed with engine: embedded',
        });
      if (m.llamacpp && m.engine !== 'llamacpp')
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'llamacpp'],
          message: 'only allowed with engine: llamacpp',
        });
      if (m.engine === 'llamacpp' && !m.path)
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'path'],
          message: 'engine: llamacpp needs path: a GGUF file or builtin:tiny-cycle',
        });
      if (m.engine === 'embedded' && !m.path)
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'path'],
          message: 'engine: embedded needs path: a GGUF file or builtin:tiny-cycle',
        });
      if (m.path?.startsWith(BUILTIN_PREFIX)) {
        const name = m.path.slice(BUILTIN_PREFIX.length);
        if (m.engine !== 'embedded' && m.engine !== 'llamacpp')
          ctx.addIssue({
            code: 'custom',
            path: ['models', i, 'path'],
            message: `${BUILTIN_PREFIX} paths need engine: embedded or llamacpp`,
          });
        else if (!(BUILTIN_MODELS as readonly string[]).includes(name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['models', i, 'path'],
            message: `unknown builtin model "${name}" (known: ${BUILTIN_MODELS.join(', ')})`,
          });
        }
      }
    });
  });

/**
 * Before validation: `launcher: name` and `launcher: {profile: name, ...}` become the profile's
 * block with the model's keys on top (`env` and `cache` merged key by key). An unknown name is
 * left as a string, which the file check reports.
 */
function resolveProfiles(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { models?: unknown }).models)) return raw;
  const file = raw as { profiles?: Record<string, unknown>; models: unknown[] };
  const profiles = (typeof file.profiles === 'object' && file.profiles) || {};
  const models = file.models.map((m) => {
    if (typeof m !== 'object' || m === null) return m;
    const launcher = (m as { launcher?: unknown }).launcher;
    const ref =
      typeof launcher === 'string'
        ? launcher
        : typeof launcher === 'object' && launcher !== null
          ? (launcher as { profile?: unknown }).profile
          : undefined;
    if (typeof ref !== 'string') return m;
    const base = profiles[ref];
    if (typeof base !== 'object' || base === null) return typeof launcher === 'string' ? m : { ...m, launcher: ref };
    const { profile: _p, ...own } = (typeof launcher === 'object' ? launcher : {}) as Record<string, unknown>;
    const b = base as Record<string, unknown>;
    const merged: Record<string, unknown> = { ...b, ...own };
    for (const k of ['env', 'cache'] as const)
      if (typeof b[k] === 'object' && typeof own[k] === 'object')
        merged[k] = { ...(b[k] as object), ...(own[k] as object) };
    return { ...m, launcher: merged };
  });
  return { ...file, models };
}

export type ModelConfig = z.infer<typeof modelSchema>;
export type LauncherConfig = z.infer<typeof launcherSchema>;

/** The model's resolved launcher block, or null for a local child process. */
export function launcherOf(m: ModelConfig): LauncherConfig | null {
  return typeof m.launcher === 'object' ? m.launcher : null;
}
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
