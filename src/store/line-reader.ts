import { createReadStream } from 'node:fs';

export interface RawLine {
  /** 1-based line number in the file. */
  line: number;
  /** Byte offset of the line's first byte, and its length without the newline. */
  offset: number;
  length: number;
  /** The decoded text, or null when the line is too long or not UTF-8. */
  text: string | null;
  problem: 'too_long' | 'invalid_utf8' | null;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Streams a file line by line with byte offsets, in constant memory: a line longer than
 * `maxLineBytes` is reported and skipped without being buffered. Blank lines are skipped.
 */
export async function* readLines(path: string, maxLineBytes: number): AsyncGenerator<RawLine> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let tooLong = false;
  let lineStart = 0;
  let lineNo = 1;
  let pos = 0;

  const finish = (endExclusive: number): RawLine | null => {
    const length = endExclusive - lineStart;
    let r: RawLine | null = null;
    if (tooLong) {
      r = { line: lineNo, offset: lineStart, length, text: null, problem: 'too_long' };
    } else {
      let buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      let len = buf.length;
      if (len > 0 && buf[len - 1] === 0x0d) len -= 1; // CRLF files
      buf = buf.subarray(0, len);
      if (!isBlank(buf)) {
        try {
          r = { line: lineNo, offset: lineStart, length: len, text: decoder.decode(buf), problem: null };
        } catch {
          r = { line: lineNo, offset: lineStart, length: len, text: null, problem: 'invalid_utf8' };
        }
      }
    }
    pending = [];
    pendingBytes = 0;
    tooLong = false;
    lineNo += 1;
    return r;
  };

  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, from);
      const end = nl === -1 ? chunk.length : nl;
      if (!tooLong) {
        if (pendingBytes + (end - from) > maxLineBytes) {
          tooLong = true;
          pending = [];
          pendingBytes = 0;
        } else if (end > from) {
          pending.push(chunk.subarray(from, end));
          pendingBytes += end - from;
        }
      }
      if (nl === -1) break;
      const r = finish(pos + nl);
      if (r) yield r;
      lineStart = pos + nl + 1;
      from = nl + 1;
    }
    pos += chunk.length;
  }
  if (pendingBytes > 0 || tooLong) {
    const r = finish(pos);
    if (r) yield r;
  }
}

function isBlank(buf: Buffer): boolean {
  for (const b of buf) if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  return true;
}
