import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log/logger.js';
import { isProcessAlive } from '../os/process.js';

/**
 * Engines run in their own process group, so a worker killed with SIGKILL leaves them
 * running (and holding GPU memory). Each start records `{enginePid, ownerPid}` next to the
 * engine log; a worker starting up stops the engines whose owner is dead.
 */
interface EngineRecord {
  enginePid: number;
  ownerPid: number;
  model: string;
}

/** The record sits beside the engine's log file: `<logDir>/<model>.engine.json`. */
const recordPath = (logFile: string) => `${logFile.replace(/\.log$/, '')}.engine.json`;

export function recordEngine(logFile: string, model: string, enginePid: number): void {
  mkdirSync(path.dirname(logFile), { recursive: true });
  const rec: EngineRecord = { enginePid, ownerPid: process.pid, model };
  writeFileSync(recordPath(logFile), JSON.stringify(rec));
}

export function clearEngineRecord(logFile: string, enginePid: number | undefined): void {
  const p = recordPath(logFile);
  try {
    const rec = JSON.parse(readFileSync(p, 'utf8')) as EngineRecord;
    if (rec.ownerPid === process.pid && (enginePid === undefined || rec.enginePid === enginePid))
      rmSync(p, { force: true });
  } catch {
    // no record
  }
}

/** True if `pid` still leads its own process group, i.e. it is still the engine we spawned detached. */
function isGroupLeader(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[2]) === pid; // field 5 (pgrp), counted after "pid (comm)"
  } catch {
    return false;
  }
}

export async function reapOrphanEngines(logDir: string, log: Logger): Promise<number> {
  let reaped = 0;
  let names: string[];
  try {
    names = readdirSync(logDir).filter((n) => n.endsWith('.engine.json'));
  } catch {
    return 0;
  }
  for (const name of names) {
    const p = path.join(logDir, name);
    let rec: EngineRecord;
    try {
      rec = JSON.parse(readFileSync(p, 'utf8')) as EngineRecord;
    } catch {
      rmSync(p, { force: true });
      continue;
    }
    if (isProcessAlive(rec.ownerPid)) continue; // another live worker's engine
    if (isProcessAlive(rec.enginePid) && isGroupLeader(rec.enginePid)) {
      log.warn(
        { model: rec.model, enginePid: rec.enginePid, deadOwnerPid: rec.ownerPid },
        'stopping an engine left by a worker that died',
      );
      try {
        process.kill(-rec.enginePid, 'SIGTERM');
        for (let i = 0; i < 100 && isProcessAlive(rec.enginePid); i++) await sleep(50);
        if (isProcessAlive(rec.enginePid)) process.kill(-rec.enginePid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      reaped += 1;
    }
    rmSync(p, { force: true });
  }
  return reaped;
}
