import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EngineProcess, type EngineExit, type EngineProcessOptions } from '../../src/engines/engine-process.js';
import { allocatePort, isPortOpen } from '../../src/engines/net.js';
import { createLogger } from '../../src/log/logger.js';

/**
 * A misbehaving engine: answers /health 200 for its first `healthyFor` checks, then 503,
 * and forks a grandchild that ignores SIGTERM (as engine workers may), printing its pid.
 */
const FAKE_ENGINE = `
const http = require('node:http');
const { spawn } = require('node:child_process');
const [port, healthyFor] = process.argv.slice(1).map(Number);
const kid = spawn('sh', ['-c', 'trap "" TERM; sleep 300'], { stdio: 'ignore' });
console.log('grandchild ' + kid.pid);
let checks = 0;
http.createServer((req, res) => {
  if (req.url === '/health') res.statusCode = ++checks <= healthyFor ? 200 : 503;
  res.end();
}).listen(port, '127.0.0.1');
`;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function fakeEngine(healthyFor: number, opts: Partial<EngineProcessOptions> = {}): Promise<EngineProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'engine-proc-'));
  const port = await allocatePort();
  const proc = new EngineProcess({
    model: 'fake',
    command: { command: process.execPath, args: ['-e', FAKE_ENGINE, String(port), String(healthyFor)], env: {} },
    port,
    logFile: path.join(dir, 'fake.log'),
    log: createLogger('silent'),
    startupTimeoutMs: 10_000,
    stopTimeoutMs: 500,
    ...opts,
  });
  cleanups.push(async () => {
    await proc.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return proc;
}

function grandchildPid(proc: EngineProcess): number {
  const m = /grandchild (\d+)/.exec(readFileSync(proc.logFile, 'utf8'));
  if (!m) throw new Error('no grandchild pid in the engine log');
  return Number(m[1]);
}

/** Alive = signalable and not a zombie (orphans are reaped by pid 1 whenever it gets to it). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ESRCH');
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('EngineProcess', () => {
  it('stops the whole process group, grandchildren that ignore SIGTERM included', async () => {
    const proc = await fakeEngine(1_000);
    await proc.start();
    await waitFor(() => /grandchild/.test(readFileSync(proc.logFile, 'utf8')), 'grandchild pid');
    const [pid, kid] = [proc.pid!, grandchildPid(proc)];
    expect(isAlive(kid)).toBe(true);
    const [s1, s2] = [proc.stop(), proc.stop()];
    expect(s1).toBe(s2); // concurrent callers share one stop
    await s1;
    expect(isAlive(pid)).toBe(false);
    await waitFor(() => !isAlive(kid), 'grandchild gone');
    expect(await isPortOpen(proc.port)).toBe(false);
    expect(proc.isRunning).toBe(false);
  });

  it('treats failing health checks as a crash: kills the group and emits exit (unhealthy)', async () => {
    const proc = await fakeEngine(2, { healthIntervalMs: 50, healthFailureLimit: 3 });
    const exits: EngineExit[] = [];
    proc.on('exit', (e) => exits.push(e));
    await proc.start();
    await waitFor(() => exits.length > 0, 'exit event');
    expect(exits).toEqual([
      { code: null, signal: 'SIGKILL', reason: 'unhealthy', outputTail: [expect.stringMatching(/^grandchild \d+$/)] },
    ]);
    await waitFor(() => !isAlive(grandchildPid(proc)), 'grandchild gone');
  });

  it('emits exit when the leader dies, and reaps what it left in its group', async () => {
    const proc = await fakeEngine(1_000);
    const exits: EngineExit[] = [];
    proc.on('exit', (e) => exits.push(e));
    await proc.start();
    await waitFor(() => /grandchild/.test(readFileSync(proc.logFile, 'utf8')), 'grandchild pid');
    process.kill(proc.pid!, 'SIGKILL');
    await waitFor(() => exits.length > 0, 'exit event');
    expect(exits[0]).toMatchObject({ signal: 'SIGKILL', reason: 'exited' });
    await waitFor(() => !isAlive(grandchildPid(proc)), 'grandchild gone');
  });

  it('rejects start() with ENGINE_EXITED when stopped during start-up, and emits no exit', async () => {
    const proc = await fakeEngine(0); // never healthy
    const exits: EngineExit[] = [];
    proc.on('exit', (e) => exits.push(e));
    const start = proc.start().catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    await proc.stop();
    expect(await start).toMatchObject({ code: 'ENGINE_EXITED' });
    expect(exits).toEqual([]);
  });
});
