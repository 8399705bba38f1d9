import { chmodSync, copyFileSync, createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultModelsYaml, startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, writeJsonl } from '../helpers/batch.js';
import { startMain, type ServerProcess } from '../helpers/processes.js';
import { parseProm, pick } from '../helpers/ops.js';
import { startRedis, type TestRedis } from '../helpers/redis-server.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures');

let server: TestServer | undefined;
let worker: ServerProcess | undefined;
let ownRedis: TestRedis | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await worker?.kill('SIGKILL');
  await server?.close();
  await ownRedis?.stop();
  ownRedis = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  server = worker = undefined;
});
const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'bw-ops-'));
  dirs.push(d);
  return d;
};

const getJson = async (s: TestServer, p: string) => {
  const res = await fetch(`${s.baseUrl}${p}`);
  return { status: res.status, body: await res.json() };
};

async function until<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined | null | false>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(150);
  }
}

/** A fake nvidia-smi on PATH: prints STATE/gpus.csv, or hangs (like a wedged driver) while STATE/hang exists. */
function fakeNvidiaSmi(): { binDir: string; state: string } {
  const binDir = tmp();
  const state = tmp();
  copyFileSync(path.join(FIXTURES, 'nvidia-smi/two-gpus.csv'), path.join(state, 'gpus.csv'));
  const script = path.join(binDir, 'nvidia-smi');
  writeFileSync(script, `#!/bin/sh\n[ -f '${state}/hang' ] && exec sleep 30\ncat '${state}/gpus.csv'\n`);
  chmodSync(script, 0o755);
  return { binDir, state };
}

describe('/health', () => {
  it('GPU readings of a worker are live while nvidia-smi answers and vanish (metrics, /ops/gpus) once stale; a killed worker makes /health degraded while the probes stay 200', async () => {
    server = await startTestServer();
    const smi = fakeNvidiaSmi();
    worker = startMain('worker', {
      REDIS_URL: server.redisUrl,
      QUEUE_PREFIX: server.prefix,
      MODELS_FILE: path.join(server.dataDir, 'models.yaml'),
      DATA_DIR: tmp(),
      WORKER_ID: 'w-gpu',
      GPU_POLL_MS: '300',
      PATH: `${smi.binDir}:${process.env.PATH}`,
    });
    const gpuSeries = async () =>
      pick(parseProm(await (await fetch(`${server!.baseUrl}/metrics`)).text()), 'batchwright_gpu_utilization_percent', {
        worker: 'w-gpu',
      });

    // Fresh: two GPUs from the fixture, in /ops/gpus, /metrics and /health.
    const gpus = await until('GPU readings', 30_000, async () => {
      const d = (await getJson(server!, '/ops/gpus')).body.data as any[];
      const alive = ((await getJson(server!, '/ops/workers')).body.data as any[]).some(
        (w) => w.id === 'w-gpu' && w.alive,
      );
      return alive && d.length === 2 && d;
    });
    expect(gpus[0]).toMatchObject({
      worker_id: 'w-gpu',
      index: 0,
      name: expect.any(String),
      memory_total_mib: expect.any(Number),
      memory_used_mib: expect.any(Number),
    });
    expect(Math.abs(gpus[0].read_at - Date.now() / 1000)).toBeLessThan(5);
    expect((await gpuSeries()).map((s) => s.labels.gpu).sort()).toEqual(['0', '1']);
    const healthy = (await getJson(server, '/health')).body;
    expect(healthy.reasons).toEqual([]);
    expect(healthy.status).toBe('healthy');
    expect(healthy.checks.gpus).toHaveLength(2);
    expect(healthy.checks.workers).toEqual([
      { id: 'w-gpu', last_heartbeat_at: expect.any(Number), age_s: expect.any(Number), ok: true },
    ]);

    // nvidia-smi stops answering: the old readings go stale and disappear, /health says why.
    writeFileSync(path.join(smi.state, 'hang'), '');
    await until(
      'GPU series to vanish',
      15_000,
      async () => (await gpuSeries()).length === 0 && (await getJson(server!, '/ops/gpus')).body.data.length === 0,
    );
    const stale = (await getJson(server, '/health')).body;
    expect(stale.status).toBe('degraded');
    expect(stale.checks.gpus).toEqual([]);
    expect(stale.reasons.join('\n')).toMatch(/GPU readings of worker w-gpu are stale \(last reading \d+ s ago\)/);

    // It answers again: live again.
    rmSync(path.join(smi.state, 'hang'));
    await until('GPU readings to return', 15_000, async () => (await gpuSeries()).length === 2);
    await until('healthy again', 10_000, async () => (await getJson(server!, '/health')).body.status === 'healthy');

    // The worker is killed: its heartbeat expires (15 s) and /health turns degraded.
    await worker.kill('SIGKILL');
    const dead = await until('degraded health', 40_000, async () => {
      const h = (await getJson(server!, '/health')).body;
      return h.reasons.some((r: string) => r.startsWith('no live worker')) && h;
    });
    expect(dead.status).toBe('degraded');
    expect(dead.reasons.join('\n')).toMatch(
      /no live worker: batches and interactive requests wait \(last heartbeat: worker w-gpu, \d+ s ago\)/,
    );
    expect(dead.checks.workers).toEqual([
      { id: 'w-gpu', last_heartbeat_at: expect.any(Number), age_s: expect.any(Number), ok: false },
    ]);
    expect(dead.checks.gpus).toEqual([]);
    expect((await getJson(server, '/ops/workers')).body.data).toEqual([
      expect.objectContaining({ id: 'w-gpu', alive: false }),
    ]);
    expect(await gpuSeries()).toEqual([]);
    expect((await fetch(`${server.baseUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.baseUrl}/readyz`)).status).toBe(200);
  }, 120_000);

  it('stays 200 on /healthz and /readyz through a long model load while /health and /ops/batches say the model is loading', async () => {
    const yaml = defaultModelsYaml({ startup_ms: 20_000 }).replace('startup_timeout_s: 30', 'startup_timeout_s: 120');
    server = await startTestServer({ modelsYaml: yaml, worker: true });
    const { client } = server;
    const file = await client.files.create({
      file: createReadStream(writeJsonl(tmp(), 'in.jsonl', chatLines(3, SIM_MODEL))),
      purpose: 'batch',
    });
    const b = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });

    const health = await until('the engine loading', 30_000, async () => {
      const h = (await getJson(server!, '/health')).body;
      return h.checks.engines.some((e: any) => e.state === 'starting') && h;
    });
    expect(health.status).toBe('healthy');
    expect(health.notes.join('\n')).toMatch(
      new RegExp(`model ${SIM_MODEL} is loading on worker \\S+ \\(since \\d+ s\\)`),
    );
    const view = await until('a waiting reason', 20_000, async () => {
      const v = (await getJson(server!, `/ops/batches/${b.id}`)).body;
      return v.waiting_reason && v;
    });
    expect(view.waiting_reason).toMatch(
      new RegExp(`^model ${SIM_MODEL} is loading on worker \\S+ \\(since \\d+ s\\)$`),
    );
    expect(view.eta_s).toBeNull();
    const m = parseProm(await (await fetch(`${server.baseUrl}/metrics`)).text());
    expect(pick(m, 'batchwright_engine_state', { model: SIM_MODEL, state: 'starting' })[0]?.value).toBe(1);
    expect(pick(m, 'batchwright_engine_state', { model: SIM_MODEL, state: 'ready' })[0]?.value).toBe(0);
    // The probes never leave 200 through the whole 20 s load (longer than a Kubernetes probe's
    // default 3 × 10 s tolerance would matter for), until the engine is ready.
    let probes = 0;
    for (;;) {
      expect((await fetch(`${server.baseUrl}/healthz`)).status).toBe(200);
      expect((await fetch(`${server.baseUrl}/readyz`)).status).toBe(200);
      probes++;
      const h = (await getJson(server, '/health')).body;
      if (h.checks.engines[0]?.state === 'ready') break;
      expect(h.checks.engines[0]?.state).toBe('starting');
      await sleep(500);
    }
    expect(probes).toBeGreaterThan(8);
    expect((await client.batches.retrieve(b.id)).status).not.toBe('failed');
  }, 150_000);

  it('Redis down: /health is 503 unhealthy with the reason, /metrics still answers from SQLite, Redis-backed /ops routes fail fast with 503', async () => {
    ownRedis = await startRedis();
    server = await startTestServer({ env: { REDIS_URL: ownRedis.url } });
    await until('Redis connected', 10_000, async () => (await getJson(server!, '/health')).body.checks.redis === 'ok');
    const port = ownRedis.port;
    await ownRedis.stop();
    const h = await until('unhealthy', 10_000, async () => {
      const r = await getJson(server!, '/health');
      return r.status === 503 && r.body;
    });
    expect(h.status).toBe('unhealthy');
    expect(h.reasons[0]).toMatch(/^Redis is down: /);
    expect(h.checks.sqlite).toBe('ok');
    const t0 = Date.now();
    const gpus = await getJson(server, '/ops/gpus');
    expect(gpus.status).toBe(503);
    expect(gpus.body.error.code).toBe('service_unavailable');
    expect(gpus.body.error.message).toMatch(/Redis is not connected/);
    const metrics = await fetch(`${server.baseUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(pick(parseProm(await metrics.text()), 'batchwright_batches', { status: 'completed' })[0]?.value).toBe(0);
    const errors = await getJson(server, '/ops/errors');
    expect(errors.status).toBe(200);
    expect(errors.body.data[0]).toMatchObject({
      source: 'api',
      message: expect.stringMatching(/engine failures cannot be shown/),
    });
    expect(Date.now() - t0).toBeLessThan(20_000); // nothing waited for Redis to come back
    expect((await fetch(`${server.baseUrl}/healthz`)).status).toBe(200);
    // Back (the control plane's shutdown needs its Redis).
    ownRedis = await startRedis({ port });
    await until('healthy again', 20_000, async () => (await getJson(server!, '/health')).body.checks.redis === 'ok');
  });
});
