import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { clearEngineRecord, reapOrphanEngines, recordEngine } from '../../src/engines/orphans.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

describe('orphan engines', () => {
  it('stops the engine group of a worker that died, and leaves a live owner’s engine alone', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-orphans-'));
    const orphan = spawn('sh', ['-c', 'sleep 60 & sleep 60'], { detached: true, stdio: 'ignore' });
    const orphanExit = new Promise((r) => orphan.once('exit', r));
    const owned = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
    try {
      writeFileSync(
        path.join(dir, 'a.engine.json'),
        JSON.stringify({ enginePid: orphan.pid, ownerPid: deadPid(), model: 'a' }),
      );
      recordEngine(path.join(dir, 'b.log'), 'b', owned.pid!); // owner: this live process
      const n = await reapOrphanEngines(dir, pino({ level: 'silent' }));
      expect(n).toBe(1);
      await orphanExit;
      expect(alive(owned.pid!)).toBe(true);
      expect(existsSync(path.join(dir, 'a.engine.json'))).toBe(false);
      expect(JSON.parse(readFileSync(path.join(dir, 'b.engine.json'), 'utf8')).enginePid).toBe(owned.pid);
      clearEngineRecord(path.join(dir, 'b.log'), owned.pid);
      expect(existsSync(path.join(dir, 'b.engine.json'))).toBe(false);
    } finally {
      for (const p of [orphan, owned]) if (p.pid && alive(p.pid)) process.kill(-p.pid, 'SIGKILL');
    }
  });
});
