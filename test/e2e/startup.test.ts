import { mkdtempSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { freePort } from '../helpers/redis-server.js';
import { startMain, waitForOutput, type ServerProcess } from '../helpers/processes.js';

const procs: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill('SIGKILL')));
});

function dirWithModels() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bw-start-'));
  writeFileSync(path.join(dir, 'models.yaml'), 'models:\n  - id: m\n    engine: sim\n');
  return dir;
}

describe('starting the server', () => {
  it('refuses a second API on the same DATA_DIR, naming the first one’s pid', async () => {
    const dir = dirWithModels();
    const env = {
      DATA_DIR: path.join(dir, 'data'),
      MODELS_FILE: path.join(dir, 'models.yaml'),
      REDIS_URL: inject('redisUrl'),
      QUEUE_PREFIX: 'startup1',
    };
    // From source (tsx) once, so the development entry is run as a process too.
    const first = startMain('serve', { ...env, PORT: String(await freePort()) }, { source: true });
    procs.push(first);
    await waitForOutput(first, /api listening/);
    const second = startMain('serve', { ...env, PORT: String(await freePort()) });
    procs.push(second);
    const exit = await second.exited;
    expect(exit.code).toBe(1);
    expect(second.output()).toContain(`is in use by another batchwright API (pid ${first.proc.pid})`);
  });

  it('says in one line how to install redis-server when it is missing and REDIS_URL is unset', async () => {
    const dir = dirWithModels();
    const bin = path.join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, path.join(bin, 'node'));
    const p = startMain('all', {
      DATA_DIR: path.join(dir, 'data'),
      MODELS_FILE: path.join(dir, 'models.yaml'),
      PATH: bin,
      REDIS_URL: '',
    });
    procs.push(p);
    const exit = await p.exited;
    expect(exit.code).toBe(1);
    expect(p.output().trim()).toBe(
      'redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server), or set REDIS_URL=redis://host:6379 to use a Redis you already run.',
    );
  });

  it('names the file and the field of a bad models.yaml and exits 1', async () => {
    const dir = dirWithModels();
    writeFileSync(path.join(dir, 'models.yaml'), 'models:\n  - id: m\n    engine: tgi\n');
    const p = startMain('serve', {
      DATA_DIR: path.join(dir, 'data'),
      MODELS_FILE: path.join(dir, 'models.yaml'),
      REDIS_URL: inject('redisUrl'),
    });
    procs.push(p);
    expect((await p.exited).code).toBe(1);
    expect(p.output()).toContain(`MODELS_FILE ${path.join(dir, 'models.yaml')} models.0.engine:`);
  });
});
