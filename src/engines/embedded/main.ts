/**
 * The `embedded` engine: llama.cpp inside Node (node-llama-cpp) behind vLLM's OpenAI HTTP API,
 * so any GGUF model runs on CPU with no GPU, no Python and no download.
 *
 *   node --import tsx src/engines/embedded/main.ts --port N --model ID --gguf FILE.gguf
 *        [--host 127.0.0.1] [--threads 1] [--ctx N] [--parallel 4]
 *
 * - Binds the port at once; every endpoint answers 503 until the model is loaded, then
 *   `GET /health` is 200 and one line goes to stdout:
 *   `{"event":"ready","ms":<since process start>,"port":N,"model":ID,"ctx":N,"parallel":N,"threads":N}`.
 * - `POST /v1/chat/completions` (the model's own chat template), `POST /v1/completions`
 *   (string, strings or token-id prompts), streaming or not (`stream_options.include_usage`),
 *   `n`, `max_tokens`/`max_completion_tokens`, `stop`, `stop_token_ids`, `temperature`,
 *   `top_p`, `top_k`, `min_p`, `seed`, `ignore_eos`. `GET /v1/models` (`max_model_len` = --ctx),
 *   `GET /metrics` (vLLM's running/waiting gauges), `GET /version`. `POST /v1/embeddings`: 400.
 * - One llama.cpp context of --parallel sequences; each request (each choice) gets a fresh
 *   sequence, further requests wait in FIFO order. A client that goes away aborts its generation.
 * - Errors use vLLM's flat shape `{"object":"error","message","type","param":null,"code"}`:
 *   400 bad parameters, unsupported features (logprobs, tools, images...) and prompts beyond
 *   the context; 404 another model id.
 * - --threads 1 by default: on small machines more llama.cpp threads than free cores collapse
 *   throughput (a tiny model drops from thousands of tokens/s to a few).
 * - Exits when re-parented (its worker died), like the simulator.
 */
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs, USAGE, UsageError, type EmbeddedConfig } from './config.js';
import { LlamaEngine } from './llama.js';
import { createEmbeddedServer } from './server.js';

function fail(message: string, code: number): never {
  process.stderr.write(`embedded: ${message}\n`);
  process.exit(code);
}

const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}

let cfg: EmbeddedConfig;
try {
  cfg = parseArgs(argv);
} catch (e) {
  if (e instanceof UsageError) fail(`${e.message} (see --help)`, 2);
  throw e;
}
if (cfg.gguf.startsWith('builtin:')) {
  fail(
    `--gguf ${cfg.gguf}: builtin models are generated and resolved to a file by the worker at start (prepareBuiltinModels); see the worker's log`,
    2,
  );
}
if (!existsSync(cfg.gguf)) fail(`GGUF file not found: ${cfg.gguf}`, 2);

const embedded = createEmbeddedServer(cfg);
const { server } = embedded;

const shutdown = (signal: string) => {
  process.stderr.write(`embedded: ${signal}, shutting down\n`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));

// No reason to outlive the worker that started us (a SIGKILLed worker leaves no one to stop us).
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) shutdown('parent exited');
}, 1000).unref();

server.on('error', (err: NodeJS.ErrnoException) =>
  fail(`cannot listen on ${cfg.host}:${cfg.port}: ${err.code ?? err.message}`, 1),
);

server.listen({ port: cfg.port, host: cfg.host, backlog: 4096 }, () => {
  const port = (server.address() as AddressInfo).port;
  LlamaEngine.load(cfg).then(
    (engine) => {
      embedded.setEngine(engine);
      const ms = Math.round(performance.now());
      process.stdout.write(
        JSON.stringify({
          event: 'ready',
          ms,
          port,
          model: cfg.model,
          ctx: engine.contextSize,
          parallel: cfg.parallel,
          threads: cfg.threads,
        }) + '\n',
      );
    },
    (err: unknown) => fail(`cannot load ${cfg.gguf}: ${(err as Error).message ?? String(err)}`, 1),
  );
});
