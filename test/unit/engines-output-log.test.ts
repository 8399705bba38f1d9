import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { logFileFor } from '../../src/engines/slot.js';
import { LineRing, RotatingLogFile, safeFileName } from '../../src/engines/output-log.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('engine output logs', () => {
  it('rotates by size and keeps two old files', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'englog-'));
    dirs.push(dir);
    const file = path.join(dir, 'm.log');
    const log = new RotatingLogFile(file, 100, 2);
    for (let i = 0; i < 10; i++) log.write(`${String(i).repeat(39)}\n`); // 40 bytes a line: 2 lines a file
    log.close();
    log.write('ignored after close\n');
    expect(readdirSync(dir).sort()).toEqual(['m.log', 'm.log.1', 'm.log.2']);
    expect(readFileSync(file, 'utf8')).toBe(`${'8'.repeat(39)}\n${'9'.repeat(39)}\n`);
    expect(readFileSync(`${file}.2`, 'utf8').startsWith('4')).toBe(true);
  });

  it('keeps only the last lines in the ring', () => {
    const ring = new LineRing(3);
    ['a', 'b', 'c', 'd'].forEach((l) => ring.push(l));
    expect(ring.toArray()).toEqual(['b', 'c', 'd']);
  });

  it('makes model ids safe and distinct as file names', () => {
    expect(safeFileName('Qwen/Qwen2.5-7B')).toBe('Qwen_Qwen2.5-7B');
    expect(safeFileName('../etc')).toBe('__etc');
    expect(logFileFor('/l', 'plain-id')).toBe('/l/plain-id.log');
    expect(logFileFor('/l', 'a/b')).not.toBe(logFileFor('/l', 'a_b'));
  });
});
