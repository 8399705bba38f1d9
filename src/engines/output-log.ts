import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import path from 'node:path';

/**
 * Every line written to an engine log file in this process, with its file and time: the
 * worker publishes them to Redis for the operator API (ops/worker-publisher.ts). Engines
 * stay unaware of Redis; with no listener this costs one check per write.
 */
export const engineOutput = new EventEmitter<{ line: [file: string, line: string, at: number] }>();

/** Keeps the last `capacity` lines: the tail quoted in start-up errors (llama-swap `logmon`). */
export class LineRing {
  private readonly lines: string[] = [];
  constructor(private readonly capacity = 50) {}

  push(line: string): void {
    this.lines.push(line.length > 2000 ? `${line.slice(0, 2000)}…` : line);
    if (this.lines.length > this.capacity) this.lines.shift();
  }

  toArray(): string[] {
    return [...this.lines];
  }
}

/** Model id → a name safe in any filesystem: `Qwen/Qwen2.5-7B` → `Qwen_Qwen2.5-7B`. */
export function safeFileName(id: string): string {
  const s = id.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_');
  return s.slice(0, 200) || '_';
}

/**
 * An append-only log file rotated by size: `x.log` → `x.log.1` → `x.log.2` (`keep` old files).
 * Writes are synchronous: engine output is a few lines a second, and sync writes keep the
 * byte count and the rename exact without juggling a stream that is still flushing.
 */
export class RotatingLogFile {
  private fd: number | null = null;
  private bytes = 0;
  private ended = false;

  constructor(
    readonly file: string,
    private readonly maxBytes = 10 * 1024 * 1024,
    private readonly keep = 2,
  ) {}

  /** Appends `text`; ignored after close() (late lines from a dying process). */
  write(text: string): void {
    if (this.ended) return;
    const buf = Buffer.from(text);
    if (this.fd === null) this.open();
    if (this.bytes > 0 && this.bytes + buf.length > this.maxBytes) this.rotate();
    writeSync(this.fd!, buf);
    this.bytes += buf.length;
    if (engineOutput.listenerCount('line') > 0) {
      const at = Date.now();
      for (const line of text.split('\n')) if (line) engineOutput.emit('line', this.file, line, at);
    }
  }

  close(): void {
    this.ended = true;
    this.closeFd();
  }

  private closeFd(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private open(): void {
    mkdirSync(path.dirname(this.file), { recursive: true });
    this.fd = openSync(this.file, 'a');
    this.bytes = statSync(this.file).size;
  }

  private rotate(): void {
    this.closeFd();
    rmSync(`${this.file}.${this.keep}`, { force: true });
    for (let i = this.keep - 1; i >= 1; i--) {
      if (existsSync(`${this.file}.${i}`)) renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    }
    if (this.keep > 0) renameSync(this.file, `${this.file}.1`);
    else rmSync(this.file, { force: true });
    this.open();
  }
}
