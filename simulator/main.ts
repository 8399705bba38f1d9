/**
 * Engine simulator entry: a fake vLLM OpenAI-compatible server for tests, benchmarks and GPU-less dry runs.
 * Run: node --import tsx simulator/main.ts --port 8000 --model my-model [flags]  (see simulator/README.md)
 */
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs, USAGE, UsageError, type SimConfig } from './config.js';
import { createSimServer } from './server.js';

function fail(message: string, code: number): never {
  process.stderr.write(`simulator: ${message}\n`);
  process.exit(code);
}

const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}

let cfg: SimConfig;
try {
  cfg = parseArgs(argv);
} catch (e) {
  if (e instanceof UsageError) fail(`${e.message} (see --help)`, 2);
  throw e;
}

const sim = createSimServer(cfg);
const { server } = sim;

const shutdown = (signal: string) => {
  process.stderr.write(`simulator: ${signal}, shutting down\n`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => {
  if (cfg.ignoreSigterm) process.stderr.write('simulator: ignoring SIGTERM (--ignore-sigterm)\n');
  else shutdown('SIGTERM');
});

// A stand-in has no reason to outlive the worker that started it (SIGKILLed workers in
// tests would otherwise leave simulators behind): exit when we are re-parented.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) shutdown('parent exited');
}, 1000).unref();

server.on('error', (err: NodeJS.ErrnoException) =>
  fail(`cannot listen on ${cfg.host}:${cfg.port}: ${err.code ?? err.message}`, 1),
);

server.listen({ port: cfg.port, host: cfg.host, backlog: 4096 }, () => {
  const port = (server.address() as AddressInfo).port;
  const becomeReady = () => {
    const ms = Math.round(performance.now());
    sim.markReady(ms);
    process.stdout.write(JSON.stringify({ event: 'ready', ms, port, model: cfg.model }) + '\n');
  };
  // --startup-ms counts from the bind, so the 503 window is always observable (like vLLM loading weights).
  if (cfg.startupMs <= 0) becomeReady();
  else setTimeout(becomeReady, cfg.startupMs);
});
