import { z } from 'zod';

/** Reads a boolean-ish env var ("1", "true", "yes"). */
const boolish = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no'])
  .transform((v) => v === '1' || v === 'true' || v === 'yes');

/**
 * Every environment variable the server reads. `.describe()` text is the source of
 * docs/configuration.md (a test keeps the two in step).
 */
export const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(4080).describe('HTTP port of the API.'),
  HOST: z
    .string()
    .min(1)
    .default('127.0.0.1')
    .describe('Interface the API binds to. Use 0.0.0.0 to accept remote clients.'),
  ALLOW_UNAUTHENTICATED: boolish
    .default(false)
    .describe(
      'Serve requests without API keys on a non-loopback HOST. Off: with no API key created, the API refuses to start on anything but loopback (create one with `npm run keys -- create --name NAME`). See docs/security.md.',
    ),
  RATE_LIMIT_PER_MIN: z.coerce
    .number()
    .int()
    .min(0)
    .default(6000)
    .describe(
      'Requests per minute per API key (per client IP with no keys); beyond it 429 rate_limit_exceeded with Retry-After. Health probes are never limited. 0: no limit.',
    ),
  MAX_ACTIVE_BATCHES: z.coerce
    .number()
    .int()
    .min(0)
    .default(100)
    .describe(
      'Most batches one project (all its keys; everyone with no keys) may have validating, in progress, finalizing or cancelling at once; more: 429 too_many_active_batches. 0: no limit.',
    ),
  DATA_DIR: z
    .string()
    .min(1)
    .default('./data')
    .describe('Folder for the SQLite database, uploaded and generated files, engine logs and the private Redis.'),
  MODELS_FILE: z.string().min(1).default('./models.yaml').describe('Path of the model registry (YAML).'),
  REDIS_URL: z
    .string()
    .regex(/^(redis|rediss|unix):\/\//, 'must start with redis://, rediss:// or unix://')
    .optional()
    .describe('Redis to use. Unset: `npm start` runs a private redis-server under DATA_DIR (append-only file on).'),
  LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('pino log level.'),
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .default('bw')
    .describe(
      'Prefix of every Redis key (BullMQ prefix too). Several deployments can share one Redis with different prefixes.',
    ),
  WORKER_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional()
    .describe('Name of this worker in Redis and logs. Default: hostname-pid.'),
  WORKER_MODELS: z
    .string()
    .optional()
    .describe('Comma-separated model ids this worker serves. Default: every model in the registry.'),
  MAX_UPLOAD_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(512 * 1024 * 1024)
    .describe('Largest accepted upload, any purpose (bytes).'),
  MAX_BATCH_FILE_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(200 * 1024 * 1024)
    .describe('Largest accepted upload with purpose "batch" (bytes).'),
  UPLOAD_IDLE_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(30_000)
    .describe(
      'An upload (POST /v1/files) whose client sends no byte for this long is cut off with 408 and its partial file removed. An idle timeout, not a total one: slow uploads that keep sending are never cut. 0 turns it off.',
    ),
  SSE_HEARTBEAT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .default(15_000)
    .describe(
      'How often the operator event streams (/ops/events, engine logs) send a comment line, so that proxies and load balancers do not close an idle stream.',
    ),
  MAX_BATCH_REQUESTS: z.coerce
    .number()
    .int()
    .positive()
    .default(50_000)
    .describe('Most requests in one batch input file.'),
  BATCH_CHUNK_SIZE: z.coerce
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(32)
    .describe('Requests per BullMQ job sent to workers.'),
  JOB_LOCK_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(30_000)
    .describe(
      'BullMQ lock duration of a chunk job. A worker that dies is detected after at most this long, and its chunk is redelivered.',
    ),
  JOB_STALLED_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(500)
    .default(15_000)
    .describe('How often workers look for chunks whose worker died (BullMQ stalledInterval).'),
  REQUEST_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(600_000)
    .describe('Timeout of one batch request to an engine.'),
  REQUEST_MAX_ATTEMPTS: z.coerce
    .number()
    .int()
    .min(1)
    .max(50)
    .default(6)
    .describe(
      'Attempts per batch request on connection errors, 5xx and timeouts before it is written to the error file.',
    ),
  MODEL_SWITCH_AFTER_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(600_000)
    .describe(
      'Longest time queued work for another model waits while the loaded model still has work (then the worker swaps at a request boundary).',
    ),
  COMPLETION_WINDOW_S: z.coerce
    .number()
    .int()
    .positive()
    .default(86_400)
    .describe('Length of the "24h" completion window in seconds. Change it only to test expiry.'),
  ENGINE_BIND_HOST: z
    .string()
    .min(1)
    .default('127.0.0.1')
    .describe(
      'Interface engines listen on. Keep 127.0.0.1 unless an API on another machine must reach them (then firewall them: vLLM dev-mode endpoints are unauthenticated).',
    ),
  WORKER_GPUS: z
    .string()
    .regex(/^[A-Za-z0-9_:-]+(\s*,\s*[A-Za-z0-9_:-]+)*$/, 'must be comma-separated GPU indexes or UUIDs')
    .optional()
    .describe(
      "CUDA_VISIBLE_DEVICES for this worker's engines (GPU indexes or UUIDs, comma-separated), e.g. 1 or 0,1. A model's options.env CUDA_VISIBLE_DEVICES wins. Unset: the worker's own CUDA_VISIBLE_DEVICES (all GPUs when that is unset too).",
    ),
  HOST_RAM_BUDGET_MB: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .describe(
      "Host RAM (MiB) that vLLM engines sleeping at level 1 (sleep_mode: level1) may hold together; beyond it they sleep at level 2. Unset: half of this machine's memory.",
    ),
  ENGINE_ADVERTISE_HOST: z
    .string()
    .min(1)
    .optional()
    .describe(
      "Host name or address the API uses to reach this worker's engines (advertised in Redis). Default: 127.0.0.1 (API on the same machine).",
    ),
  INFERENCE_WAIT_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(900_000)
    .describe(
      'How long an interactive request waits for its model to be loaded before a 503 with Retry-After (long enough for a vLLM cold start).',
    ),
  INTERACTIVE_POLICY: z
    .enum(['wait', 'preempt'])
    .default('wait')
    .describe(
      'An interactive request for another model while a batch runs: "wait" until the batch model has no queued work or INTERACTIVE_MAX_WAIT_MS passed; "preempt" swaps at the next chunk boundary, serves, then swaps back.',
    ),
  INTERACTIVE_MAX_WAIT_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(120_000)
    .describe(
      'With INTERACTIVE_POLICY=wait, the longest an interactive request waits for a running batch of another model before the worker swaps anyway (at a chunk boundary).',
    ),
  GPU_POLL_MS: z.coerce
    .number()
    .int()
    .min(100)
    .default(5_000)
    .describe(
      'How often a worker reads its GPUs with nvidia-smi (only when nvidia-smi is on its PATH) for /metrics, /health and /ops/gpus. A reading older than 3× this is stale and no longer shown.',
    ),
  SHUTDOWN_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(30_000)
    .describe('Deadline for a graceful shutdown on SIGTERM/SIGINT.'),
  EXPIRY_SWEEP_MS: z.coerce
    .number()
    .int()
    .positive()
    .default(60_000)
    .describe('How often expired files are deleted and expired batches closed.'),
  WEBHOOK_URL: z
    .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
    .optional()
    .describe(
      "Webhook receiver for every batch: gets batch.completed, batch.failed, batch.expired and batch.cancelled events (OpenAI's event shape, Standard Webhooks signatures). A batch can name its own in metadata.webhook_url; it gets both.",
    ),
  WEBHOOK_SECRET: z
    .string()
    .startsWith('whsec_', 'must start with whsec_ (followed by base64)')
    .optional()
    .describe(
      'Signing secret of webhook events (`whsec_` + base64). Unset: one is generated at first start and kept in DATA_DIR/webhook-secret.',
    ),
  WEBHOOK_ALLOW_HOSTS: z
    .string()
    .optional()
    .describe(
      'Comma-separated host names, addresses and CIDRs webhooks may reach although they are internal (loopback, private, link-local...), e.g. 127.0.0.1 or receiver.internal,10.2.0.0/16. Everything else internal is refused.',
    ),
  WEBHOOK_RETRY_BASE_MS: z.coerce
    .number()
    .int()
    .min(1)
    .default(5_000)
    .describe(
      'First webhook retry delay; later retries wait 6, 24, 120, 360, 720 and then 1440 times it (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h), with jitter.',
    ),
  WEBHOOK_MAX_ATTEMPTS: z.coerce
    .number()
    .int()
    .min(1)
    .max(100)
    .default(18)
    .describe(
      'Attempts per webhook event before it is given up (state failed); an event is also given up once it is 24 h old.',
    ),
  WEBHOOK_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .default(10_000)
    .describe("Timeout of one webhook attempt (connect, then the answer's headers)."),
});

export type Env = z.infer<typeof envSchema>;
